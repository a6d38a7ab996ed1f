"""pyfunc for `instructflow-reward-model`: (prompt, response) rows in, scalar rewards out.

rm = mlflow.pyfunc.load_model("models:/instructflow-reward-model/1")
rm.predict(pd.DataFrame({"prompt": ["Add 2 and 3."], "response": ["5"]}))
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class RewardModel(PythonModel):
    def load_context(self, context) -> None:
        from instructflow.models.reward_model import reward_model_from_causal_lm

        self.model, self.tokenizer = reward_model_from_causal_lm(context.artifacts["hf_model"])

    def predict(
        self, context, model_input: pd.DataFrame, params: dict | None = None
    ) -> list[float]:
        import torch

        from instructflow.models.lm import context_length
        from instructflow.models.reward_model import encode_for_reward, rewards

        ids, mask = encode_for_reward(
            self.tokenizer,
            list(model_input["prompt"]),
            list(model_input["response"]),
            context_length(self.model),
        )
        with torch.no_grad():
            return rewards(self.model, ids, mask).tolist()


mlflow.models.set_model(RewardModel())
