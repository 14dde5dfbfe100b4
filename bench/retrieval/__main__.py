"""`python -m bench.retrieval`: the retrieval bench (bench/retrieval/run.py)."""

from bench.retrieval.run import main

raise SystemExit(main())
