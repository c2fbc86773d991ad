"""The closing step every bench script shares: stamp the end load average and write the JSON record."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_record(info: dict, out) -> None:
    """``info["machine"]["loadavg_end"]`` = now, then ``info`` as indented JSON to ``out`` (folders made)."""
    info["machine"]["loadavg_end"] = os.getloadavg()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(info, indent=1))
