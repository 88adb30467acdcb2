# Printer-tray buzzer: see README.md. The board runs this file at power-on.
import board
from tray import PrinterTray

board.start(PrinterTray)
