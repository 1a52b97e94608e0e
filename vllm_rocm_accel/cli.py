"""The ``vllm-rocm-accel`` command: ``doctor`` and ``demo``."""

from __future__ import annotations

import argparse
import sys

from . import settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vllm-rocm-accel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    doc = sub.add_parser("doctor", help="which backend serves each op here, and why")
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    demo = sub.add_parser("demo", help="serve a tiny random Llama through vLLM with the plugin")
    demo.add_argument("--compile", action="store_true", help="torch.compile the model instead of eager")
    args = parser.parse_args(argv)
    try:
        if args.command == "doctor":
            from . import doctor

            return doctor.main(as_json=args.json)
        from . import demo as demo_mod

        return demo_mod.main(["--compile"] if args.compile else [])
    except settings.SettingsError as err:
        print(f"vllm-rocm-accel: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
