# Docker Space (sdk: docker, app_port: 7860) or any container host: the app on the embedded
# digits models, CPU. Same install steps as the README and CI: CPU torch first, then the
# requirements, then the package itself without dependencies.
FROM python:3.11-slim

# Spaces run containers as UID 1000; every cache must be writable by that user.
RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/home/user/.cache/huggingface \
    TRITON_CACHE_DIR=/tmp/triton \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor \
    MPLCONFIGDIR=/tmp/matplotlib \
    GRADIO_TEMP_DIR=/tmp/gradio \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860
RUN mkdir -p $HOME/app
WORKDIR $HOME/app

# CPU wheels by default: an unpinned torch from PyPI is a multi-GB CUDA build. For a GPU Space,
# build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 (or another CUDA index).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY --chown=user requirements.txt .
RUN pip install --no-cache-dir --user torch --index-url "$TORCH_INDEX" \
 && pip install --no-cache-dir --user -r requirements.txt
COPY --chown=user . .
RUN pip install --no-cache-dir --user -e . --no-deps

EXPOSE 7860
CMD ["python", "app.py"]
