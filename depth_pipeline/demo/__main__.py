"""``python -m depth_pipeline.demo``."""

import sys

from depth_pipeline.demo.run import main

sys.exit(main())
