# Vehicle GPS tracker: see README.md. The board runs this file at power-on.
import board
from tracker import VehicleTracker

board.start(VehicleTracker)
