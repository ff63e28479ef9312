"""Compare two photos over the HTTP API with the Python client.

FACEPROOF_URL=http://127.0.0.1:8000 FACEPROOF_API_KEY=fp_... python examples/client_compare.py a.jpg b.jpg
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from faceproof.client import FaceproofClient


def main(source: Path, target: Path) -> None:
    with FaceproofClient(os.environ["FACEPROOF_URL"], os.environ["FACEPROOF_API_KEY"]) as client:
        result = client.compare(source, target)
        print(f"similarity={result.similarity:.3f} match={result.match}")
        session = client.create_session()
        print(f"session={session.session_id} status={session.status.value}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
