"""`python -m bench [--quick] …`: run the benchmark and write bench/results/latest.json and latency.png."""

from bench.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
