# The worker image for the Beam pipeline on Dataflow (--sdk_container_image), Flink
# and Spark (--environment_type=DOCKER --environment_config=IMAGE): Beam's own SDK
# image of our Beam and Python versions, with the package and the modules the
# corpus's programs import (the `science` extra) installed into the interpreter
# the sandbox runs. Build from the project root after `pip wheel --no-deps . -w dist`:
#   docker build -f launch/beam_worker.Dockerfile -t REGION-docker.pkg.dev/PROJECT/REPO/codeio-beam .
# The sandbox needs unshare(2) for its namespaces: a runtime that forbids it gives
# workers whose rows are error rows naming the missing protection (README:
# workers that can run the sandbox), never code run without them.
FROM apache/beam_python3.11_sdk:2.77.0
COPY dist/codeio_jax-0.1.0-py3-none-any.whl /tmp/
RUN pip install --no-cache-dir "/tmp/codeio_jax-0.1.0-py3-none-any.whl[beam,science]" \
    && rm /tmp/codeio_jax-0.1.0-py3-none-any.whl
