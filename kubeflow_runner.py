"""Vertex AI Pipelines runner (KubeflowV2DagRunner). Owned by issue #6: compiling
`create_pipeline()` to pipeline JSON with Dataflow, Vertex Training and endpoint placement.

Until then this entry point says so plainly instead of pretending to compile.
"""

import sys


def main() -> int:
    print("kubeflow_runner: the Vertex AI runner is not built yet (see issue #6); "
          "use local_runner.py", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
