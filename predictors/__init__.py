"""maas predictors: KServe model servers for CNN, RNN, transformer and generative models.

Importing this package is cheap: torch, kserve and the model families are imported only
where they are used (the CLI, the server and each family's ``load``).
"""

__version__ = "0.1.0"
