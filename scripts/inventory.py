import importlib, inspect
for m in ["pandas","pyarrow","typer","rich","click","gguf","transformers","accelerate","triton","plotly","datasets","tqdm","rdata","yaml","regex"]:
    try:
        mod = importlib.import_module(m); print(m, getattr(mod, "__version__", "?"), mod.__file__[:40])
    except Exception as e: print(m, "MISSING", type(e).__name__)
import torch; print("cuda", torch.__version__, torch.cuda.device_count())
