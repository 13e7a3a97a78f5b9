"""The generator as an MLflow model ("models from code": MLflow keeps this file's text and runs it
when the model loads; nothing is unpickled). Its artifact is the generator file itself, read with
weights_only as everywhere else, and predict runs translate's own code, so a served or loaded model
gives the pixels `pix2pix translate` gives.

Input: uint8 images (N, H, W, 3), any size (a class-id map as a grey image, R = G = B = id);
output: uint8 (N, H, W, 3). Params: mode (paper or eval, as translate's --mode) and seed.
Loading it needs the pix2pix-dvc package installed (`mlflow models serve --env-manager local` in
the project's environment).
"""

from __future__ import annotations

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from pix2pix.translate import load_model, model_input as as_input, translate_image


class Generator(PythonModel):
    def load_context(self, context) -> None:
        self.G, self.model = load_model(context.artifacts["generator"], torch.device("cpu"))

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        params = {"mode": "paper", "seed": 0, **(params or {})}
        images = np.asarray(model_input)
        return np.stack([translate_image(self.G, as_input(image, self.model), self.model, params["mode"], 8,
                                         torch.device("cpu"), seed=int(params["seed"])) for image in images])


mlflow.models.set_model(Generator())
