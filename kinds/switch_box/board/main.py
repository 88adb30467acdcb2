# Switch box: see README.md. The board runs this file at power-on.
import board
from switchbox import SwitchBox

board.start(SwitchBox)
