# jisaku: MicroPython runs this file first at every start, then /main.py.
#
# It finishes an update waiting in flash (with the whole heap still free) and starts the
# version of the app the board should run; a new version that fails is left by the board
# itself (see /lib/versions.py). When the version to run is the one jisaku flash put on,
# or if anything here goes wrong, this file ends and MicroPython runs /main.py as always.
import versions

main = versions.start()   # e.g. "/app/1.4.0/main.py"; None: the installed version, /main.py
del versions              # its code leaves the heap: the app has it all
if main:
    import machine
    import sys
    try:
        with open(main) as f:
            code = f.read()
        exec(code, {"__name__": "__main__"})
    except Exception as err:  # not KeyboardInterrupt: Ctrl-C still stops the board for mpremote
        sys.print_exception(err)
        print("jisaku: %s stopped; restarting" % main)
    machine.reset()   # on trial this start was counted: a version that keeps failing goes back
