"""The MLflow pyfunc model of a domain version (logged as "models from code").

MLflow copies this file into each logged model, so it imports nothing from
domain_mlflow: loading a registered version needs only mlflow, torch and
transformers. The prompt format (the tokenizer's chat template, or the plain
template), and the generation budget come from the model config written at
logging time.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class DomainTextGenerator(PythonModel):
    """Greedy text generation with the merged (adapter-free) model in artifacts["model"]."""

    # No type hints on predict: MLflow would try to derive a schema from them; the
    # signature is given explicitly when the model is logged.
    def load_context(self, context):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = context.artifacts["model"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        self.model.eval()
        config = context.model_config or {}
        self.template = config.get("prompt_template", "{prompt}")
        self.chat = config.get("prompt_format") == "chat_template"
        self.max_new_tokens = int(config.get("serving_max_new_tokens",
                                             config.get("max_new_tokens", 64)))

    def _prompts(self, model_input):
        if hasattr(model_input, "columns"):
            column = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
            return [str(value) for value in model_input[column]]
        if isinstance(model_input, str):
            return [model_input]
        if isinstance(model_input, dict):
            prompts = model_input.get("prompt", [])
            return [prompts] if isinstance(prompts, str) else list(prompts)
        return [str(value) for value in model_input]

    def _render(self, prompt):
        if self.chat:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        return self.template.format(prompt=prompt)

    def predict(self, context, model_input, params=None):
        import torch

        budget = int((params or {}).get("max_new_tokens", self.max_new_tokens))
        completions = []
        for prompt in self._prompts(model_input):
            ids = self.tokenizer(self._render(prompt), add_special_tokens=False,
                                 return_tensors="pt")
            with torch.no_grad():
                output = self.model.generate(
                    **ids,
                    max_new_tokens=budget,
                    do_sample=False,
                    eos_token_id=self.tokenizer.eos_token_id,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new_tokens = output[0, ids["input_ids"].shape[1] :]
            completions.append(self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip())
        return completions


mlflow.models.set_model(DomainTextGenerator())
