"""The naive contender: a plain ``kserve.Model`` as KServe's custom-predictor docs show it.

One forward pass per request, kserve's own request decoding (``InferInput.as_numpy``) and
response encoding, the stock ``kserve.ModelServer``. It loads the same weights as maas (via the
model directory's config) so both answer the same. Written here, in the benchmark, as the
baseline; not part of maas.

    python -m maas_bench.naive --model_dir DIR --model_name NAME --http_port P --grpc_port G
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

import kserve
import numpy as np
import torch
from kserve import InferOutput, InferRequest, InferResponse


class NaiveClassifier(kserve.Model):
    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.ready = False

    def load(self) -> bool:
        from predictors.config import ModelConfig
        from predictors.modules import build_module

        config = ModelConfig.load(self.model_dir)
        assert config.module is not None
        self.model = build_module(config.module, self.model_dir, torch.device("cpu"), torch.float32)
        self.sequence = config.family == "sequence"
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        x = torch.from_numpy(payload.inputs[0].as_numpy())
        with torch.no_grad():
            args = (x, torch.full((len(x),), x.shape[1])) if self.sequence else (x,)
            probs = torch.softmax(self.model(*args), dim=1).numpy()
        outputs = []
        for name, array in (("probabilities", probs), ("label", probs.argmax(1).astype(np.int64))):
            out = InferOutput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
            out.set_data_from_numpy(array, binary_data=payload.use_binary_outputs)
            outputs.append(out)
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs,
        )


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    torch.set_num_threads(1)
    model = NaiveClassifier(args.model_name, Path(args.model_dir))
    model.load()
    kserve.ModelServer().start([model])


if __name__ == "__main__":
    main()
