"""StudioML's own config files work (issue 11): what maps is used, what does not apply gives one
warning per key, credentials are never used, and ``$VAR``/``~`` expand in every string value.

The three files below are our own copies of the keys and shapes of StudioML's
``default_config.yaml`` and of the S3 and Google Cloud examples in its documentation.
"""

from __future__ import annotations

import os

import pytest

from studio_run.config import load_config
from studio_run.errors import ConfigError
from tests.helpers import studio

STUDIOML_DEFAULT = """\
database:
    type: http
    serverUrl: https://studio-example.firebaseapp.com/api/v0
    authentication: github
    compression: None
storage:
    type: gcloud
    bucket: studioml-meta
saveWorkspaceFrequency: 1m   # how often the workspace is saved (minutes)
experimentLifetime: 30m
verbose: error
cloud:
    gcloud:
        zone: us-east1-c
resources_needed:
    cpus: 2
    ram: 3g
    hdd: 60g
    gpus: 0
    gpuMem: 4g
sleep_time: 1
worker_timeout: 30
optimizer:
    cmaes_config:
        popsize: 100
        sigma0: 0.25
        load_best_only: false
    load_checkpoint_file:
    visualization: true
    result_dir: "~/Desktop/"
    checkpoint_interval: 0
    termination_criterion:
        generation: 5
        fitness: 999
        skip_gen_thres: 1.0
        skip_gen_timeout: 30
"""

STUDIOML_S3 = """\
database:
    type: s3
    endpoint: https://s3-us-west-2.amazonaws.com
    bucket: "studioml-meta"
    authentication: none
storage:
    type: s3
    endpoint: https://s3-us-west-2.amazonaws.com
    bucket: "studioml-artifacts"
    credentials:
        aws:
            access_key: AKIAEXAMPLEKEY
            secret_access_key: wJalrXUtnEXAMPLESECRET
            region: us-west-2
env:
    AWS_ACCESS_KEY_ID: AKIAEXAMPLEKEY
    AWS_SECRET_ACCESS_KEY: wJalrXUtnEXAMPLESECRET
    AWS_DEFAULT_REGION: us-west-2
    DATA_DIR: ~/data
queue: sqs_team_queue
saveWorkspaceFrequency: 3m
experimentLifetime: 2h
verbose: debug
resources_needed:
    cpus: 4
    ram: 8g
"""

STUDIOML_GCS = """\
database:
    type: FireBase
    projectId: studio-example
    apiKey: AIzaEXAMPLEAPIKEY
    authDomain: studio-example.firebaseapp.com
    databaseURL: https://studio-example.firebaseio.com
    messagingSenderId: 123456789
    storageBucket: studio-example.appspot.com
    use_email_auth: true
storage:
    type: gcloud
    bucket: studio-example.appspot.com
cloud:
    gcloud:
        zone: us-central1-f
server:
    authentication: github
resources_needed: {cpus: 4, ram: 8g, gpus: 1}
saveWorkspaceFrequency: 10
"""

SECRETS = ("AKIAEXAMPLEKEY", "wJalrXUtnEXAMPLESECRET", "AIzaEXAMPLEAPIKEY")


def _load(tmp_path, text: str, **env: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(str(path), env={"STUDIOML_HOME": str(tmp_path / "h"), "HOME": str(tmp_path), **env})


def _warned_keys(config) -> list[str]:
    return [line.split(": ", 2)[1].split(" ")[0].rstrip(":") for line in config.warnings]


def test_studiomls_default_config_is_accepted(tmp_path):
    config = _load(tmp_path, STUDIOML_DEFAULT)
    assert config.store == "gs://studioml-meta"
    assert config.capture_interval == 60 and config.experiment_lifetime == 1800 and config.verbose == "error"
    assert _warned_keys(config) == ["cloud", "database", "optimizer", "resources_needed", "sleep_time",
                                    "worker_timeout"]
    assert all("does not apply to studio; ignored" in line for line in config.warnings)


def test_the_s3_example_maps_storage_env_and_queue_and_never_uses_credentials(tmp_path):
    config = _load(tmp_path, STUDIOML_S3)
    assert config.store == "s3://studioml-artifacts"
    assert config.store_options == {"endpoint": "https://s3-us-west-2.amazonaws.com"}
    assert config.script_env == {"AWS_DEFAULT_REGION": "us-west-2", "DATA_DIR": str(tmp_path / "data")}
    assert config.queue == "sqs_team_queue" and config.capture_interval == 180
    assert config.experiment_lifetime == 7200 and config.verbose == "debug"
    credentials = [line for line in config.warnings if "credential" in line]
    assert [k for k in _warned_keys(config) if k.startswith(("storage", "env"))] == [
        "storage.credentials", "env.AWS_ACCESS_KEY_ID", "env.AWS_SECRET_ACCESS_KEY"]
    assert len(credentials) == 3 and all("~/.aws/credentials" in line for line in credentials)
    assert not [s for s in SECRETS if s in repr(config)]


def test_the_gcs_example_warns_that_the_database_holds_credentials(tmp_path):
    config = _load(tmp_path, STUDIOML_GCS)
    assert config.store == "gs://studio-example.appspot.com"
    assert config.capture_interval == 600  # a bare number is minutes, as StudioML read it
    database = [line for line in config.warnings if ": database:" in line]
    assert len(database) == 1 and "holds credentials" in database[0] and "gcloud auth" in database[0]
    assert _warned_keys(config) == ["cloud", "database", "resources_needed", "server"]
    assert not [s for s in SECRETS if s in repr(config)]


@pytest.mark.parametrize("text, message", [
    ("saveWorkspaceFrequence: 1m", "unknown key 'saveWorkspaceFrequence'; did you mean 'saveWorkspaceFrequency'?"),
    ("databse: {type: http}", "did you mean 'database'?"),
    ("storage: {type: s3, bucket: b, endpont: 'http://x'}", "unknown key storage.endpont; did you mean 'endpoint'?"),
    ("saveWorkspaceFrequency: often", "saveWorkspaceFrequency 'often' is not a duration"),
    ("env: [A, B]", "env must be a mapping"),
    ("env: {'not a name': 1}", "is not a variable name"),
    ("verbose: loud", "verbose must be one of"),
    ("queue: [a]", "queue must be a queue name"),
])
def test_mistakes_in_studioml_keys_are_one_error(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert message in str(info.value)


def test_variables_and_home_expand_in_every_string_value(tmp_path):
    config = _load(tmp_path, "store: $ROOT/${TEAM}-store\nblobcache: ~/cache\nenv: {WHO: 'team $TEAM costs $$5'}\n",
                   ROOT="/data", TEAM="vision")
    assert config.store == "/data/vision-store" and config.blobcache == str(tmp_path / "cache")
    assert config.script_env == {"WHO": "team vision costs $5"}


@pytest.mark.parametrize("text", ["store: $MYSTORE", "store: ${MYSTORE}/x", "env: {A: $MYSTORE}",
                                  "optimizer: {result_dir: $MYSTORE}"])
def test_an_unset_variable_is_an_error_naming_it(tmp_path, text):
    with pytest.raises(ConfigError, match=r"uses \$MYSTORE, which is not set"):
        _load(tmp_path, text)


def test_studio_prints_each_warning_once_and_goes_on(tmp_path):
    home = str(tmp_path)
    os.makedirs(os.path.join(home, ".studioml"))
    with open(os.path.join(home, ".studioml", "config.yaml"), "w") as f:
        f.write(STUDIOML_S3)
    done = studio("--store", os.path.join(home, "store"), "list", home=home)
    assert done.returncode == 0, done.stderr
    warnings = done.stderr.strip().splitlines()
    assert len(warnings) == 5 and all(w.startswith("studio: warning: ") for w in warnings)
    assert len({w.split(": ")[3] for w in warnings}) == 5  # one line per key
    assert not [s for s in SECRETS if s in done.stderr + done.stdout]


def test_env_variables_of_the_config_reach_the_script(tmp_path):
    home = tmp_path / "home"
    (home / ".studioml").mkdir(parents=True)
    (home / ".studioml" / "config.yaml").write_text("env:\n  DATA_DIR: $HOME/data\n  GREETING: hello\n")
    script = tmp_path / "show_env.py"
    script.write_text("import os\nprint(os.environ['GREETING'], os.environ['DATA_DIR'])\n")
    proc = studio("run", "-e", "envtest", str(script), home=str(home), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert f"hello {home}/data" in proc.stdout
