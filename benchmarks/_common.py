"""Shared command-line plumbing for benchmark scripts: --data-dir, --json, --quick."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    default_dir = os.environ.get("COTRAIN_DATA", str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    p.add_argument("--data-dir", default=default_dir, help="folder of the real data sets (default: $COTRAIN_DATA or ../shared/data)")
    p.add_argument("--json", default=None, help="write the results here as JSON")
    p.add_argument("--quick", action="store_true", help="a reduced run of about a minute that walks the whole path")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p


def setup_threads(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
