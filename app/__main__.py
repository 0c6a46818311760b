import sys

if sys.argv[1:2] == ["_forkserver"]:  # before app.cli, whose imports every fork would copy
    from app.runtimes.python.supervisor import main as forkserver

    sys.exit(forkserver(sys.argv[2:]))

from app.cli import main

sys.exit(main())
