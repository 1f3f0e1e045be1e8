import sys

from demo.replay import main

sys.exit(main())
