"""Entrypoint for ``ray job submit``: the annotation job with ``zs-ray annotate``'s flags.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/annotate_mlsum.py --split test --output s3://bucket/predictions/

Inside a submitted job ``ray.init()`` joins the job's cluster; run directly, it
starts a local Ray, like the CLI.
"""

import os
import sys

try:
    import zs_ray  # noqa: F401  (installed on the cluster by cluster.yaml's setup)
except ImportError:  # run from a checkout (the job's working dir): use it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zs_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["annotate", *sys.argv[1:]]))
