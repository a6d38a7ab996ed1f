"""pyfunc for `instructflow-policy`: prompts in, responses out.

policy = mlflow.pyfunc.load_model("models:/instructflow-policy@champion")
policy.predict(["What is 3 plus 4?"])
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class PolicyModel(PythonModel):
    def load_context(self, context) -> None:
        from models.lm import load_causal_lm

        self.model, self.tokenizer = load_causal_lm(context.artifacts["hf_model"])

    def predict(self, context, model_input, params=None) -> list[str]:
        from models.sampling import generate

        prompts = (
            list(model_input["prompt"])
            if isinstance(model_input, pd.DataFrame)
            else list(model_input)
        )
        params = params or {}
        rollout = generate(
            self.model,
            self.tokenizer,
            prompts,
            int(params.get("max_new_tokens", 24)),
            temperature=float(params.get("temperature", 1.0)),
            greedy=bool(params.get("greedy", True)),
        )
        return rollout.texts


mlflow.models.set_model(PolicyModel())
