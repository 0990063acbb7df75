"""``python -m predictors``: serve one model directory with the KServe ModelServer."""

from predictors.cli import main

if __name__ == "__main__":
    main()
