"""Megatron-Core training backend: TP x PP x DP GPTModel from a Hugging Face checkpoint, GRPO loss on
the vocab-parallel output weight, HF weights in and out. Import `backend.MegatronBackend`."""
