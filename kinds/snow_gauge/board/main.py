# Snow gauge: see README.md. The board runs this file at power-on.
import board
from gauge import SnowGauge

board.start(SnowGauge)
