"""Shared fixtures: small synthetic embeddings, and real EfficientNet-Lite0 embeddings cached on disk."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FIXTURES = TESTS / "fixtures"
EXAMPLES = ROOT / "examples" / "fashion"
BAGS = sorted((EXAMPLES / "bag").glob("*.png"))


def pytest_configure(config: pytest.Config) -> None:
    """The suite's embedding and graph cache is its own, kept in pytest's cache (not the user's, which no test
    reads or fills), shared by its processes and the commands they start. Each worker process (pytest-xdist)
    computes on its share of the cores: two workers of two threads each on 2 cores embed at 61 images/s together,
    against 98 with one thread each."""
    cache = getattr(config, "cache", None)
    folder = cache.mkdir("imprint-cache") if cache is not None else tempfile.mkdtemp(prefix="imprint-cache-")
    os.environ["IMPRINT_CACHE_DIR"] = str(folder)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def run(capsys, *argv) -> tuple[int, str, str]:
    """The command line run in this process: (exit status, stdout, stderr)."""
    from imprint.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def copy_examples(root: Path, classes: tuple[str, ...] = ("bag", "sneaker", "trouser"),
                  per_class: int | None = None) -> Path:
    """A folder of the bundled example images: `per_class` of each of `classes` (all of them by default)."""
    for name in classes:
        (root / name).mkdir(parents=True)
        for image in sorted((EXAMPLES / name).iterdir())[:per_class]:
            shutil.copy(image, root / name / image.name)
    return root


@pytest.fixture()
def three_classes(tmp_path: Path) -> Path:
    """A folder of every bundled image of three classes (bag, sneaker, trouser)."""
    return copy_examples(tmp_path / "images")


@pytest.fixture()
def six_per_class(tmp_path: Path) -> Path:
    """A folder of six bundled images of each of three classes."""
    return copy_examples(tmp_path / "images", per_class=6)


@pytest.fixture()
def four_classes(tmp_path: Path) -> Path:
    """A folder of every bundled image of four classes (bag, coat, sneaker, trouser)."""
    return copy_examples(tmp_path / "images", classes=("bag", "coat", "sneaker", "trouser"))


@pytest.fixture()
def eight_per_class(tmp_path: Path) -> Path:
    """A folder of eight bundled images of each of three classes (bag, coat, sandal)."""
    return copy_examples(tmp_path / "images", classes=("bag", "coat", "sandal"), per_class=8)


@pytest.fixture()
def messy_folder(tmp_path: Path) -> tuple[Path, Path]:
    """Real Fashion-MNIST images of four classes plus a corrupt image, a text file and an empty class folder;
    (the folder, the corrupt image)."""
    root = tmp_path / "images"
    for name in ("bag", "sneaker", "trouser", "dress"):
        shutil.copytree(EXAMPLES / name, root / name)
    good = root / "bag" / sorted((root / "bag").iterdir())[0].name
    corrupt = root / "bag" / "broken.png"
    corrupt.write_bytes(good.read_bytes()[:40])  # a truncated PNG
    (root / "sneaker" / "README.txt").write_text("not an image")
    (root / "empty_class").mkdir()
    return root, corrupt


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The suite's embedding cache folder: the default one under IMPRINT_CACHE_DIR, which every command of the run
    uses unless told otherwise, so that the bundled images are embedded once a run."""
    from imprint.io.cache import default_cache_dir

    return default_cache_dir()


@pytest.fixture()
def cache_flags(cache_dir: Path) -> list[str]:
    """Command-line flags for the suite's embedding cache and no progress bars; a test of the cache itself names
    its own."""
    return ["--cache-dir", str(cache_dir), "--quiet"]


def error_lines(err: str) -> list[str]:
    """The lines of the command line's stderr that are errors."""
    return [line for line in err.splitlines() if line.startswith("imprint: error: ")]


def one_line_error(callable_, match: str, error: type[Exception] = ValueError) -> None:
    """`callable_()` raises `error`, matching `match`, in one line."""
    with pytest.raises(error, match=match) as info:
        callable_()
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def fitted(mixture):
    """(a k-means classifier of half the mixture with string labels, the embeddings, their labels)."""
    from imprint import ImprintClassifier

    X, y = mixture
    labels = np.array([f"class-{c}" for c in y])
    return ImprintClassifier(generation="kmeans", k=5).fit(X[::2], labels[::2]), X, labels


def header_mutations(meta: dict, rng: np.random.Generator) -> list:
    """Random deletions and type changes of a file header's fields, at every depth (a new value of the same type is
    an edit no checksum-free old format could notice, and in the current format the checksum refuses it)."""
    paths = []

    def walk(value, trail):
        paths.append(trail)
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, trail + [key])
        elif isinstance(value, list):
            for i, item in enumerate(value[:3]):
                walk(item, trail + [i])

    walk(meta, [])
    replacements = [None, 7, -1, 2.5, "x", "", [], {}, [1, 2], {"a": 1}, True, float("inf")]
    chosen = []
    for trail in [paths[i] for i in rng.choice(len(paths), min(40, len(paths)), replace=False)]:
        if not trail:
            continue
        value = meta
        for key in trail:
            value = value[key]
        chosen.append((trail, "delete"))
        other_types = [r for r in replacements if type(r) is not type(value)]  # a type change, not a new value
        chosen.append((trail, other_types[int(rng.integers(len(other_types)))]))
    return chosen


def apply_mutation(meta: dict, trail: list, action) -> None:
    """`meta` with the field at `trail` deleted (action "delete") or replaced by `action`."""
    target = meta
    for key in trail[:-1]:
        target = target[key]
    if action == "delete":
        if isinstance(target, dict):
            target.pop(trail[-1], None)
        else:
            target.pop(trail[-1])
    else:
        target[trail[-1]] = action


# a fit in a process whose memory is limited below the data: argv = X.npy, y.npy, megabytes, settings
LIMITED_FIT_SCRIPT = """
import resource, sys
import numpy as np
from imprint import ImprintClassifier
import imprint.stages, imprint.openset  # everything imported before the limit is set
X = np.load(sys.argv[1], mmap_mode="r")
y = np.load(sys.argv[2])
def vm_data():
    for line in open("/proc/self/status"):
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
limit = vm_data() + int(sys.argv[3]) * 2**20  # what is used now, plus a little: less than the data
resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.RLIM_INFINITY))
settings = eval(sys.argv[4])
try:
    clf = ImprintClassifier(device="cpu", **settings).fit(X, y)
    print("accuracy", (clf.predict(X[::997]) == y[::997]).mean())
except MemoryError as error:
    print("refused", str(error).splitlines()[0])
"""


MEMORY_LEFT_MB = 180  # MiB a limited fit (LIMITED_FIT_SCRIPT) may use beyond its imports: less than big_set (195)


@pytest.fixture(scope="session")
def big_set(tmp_path_factory) -> tuple[Path, Path]:
    """400,000 x 128 float32 (195 MiB on disk, memory-mapped): two classes of 200,000 rows, raw (not unit-norm)."""
    folder = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    X = np.lib.format.open_memmap(folder / "X.npy", mode="w+", dtype=np.float32, shape=(400_000, 128))
    y = np.repeat(np.arange(2), 200_000)
    centres = rng.normal(size=(2, 128)).astype(np.float32) * 3
    for start in range(0, len(y), 50_000):
        X[start:start + 50_000] = centres[y[start:start + 50_000]] + rng.normal(size=(50_000, 128))
    X.flush()
    del X
    np.save(folder / "y.npy", y)
    assert (folder / "X.npy").stat().st_size > MEMORY_LEFT_MB * 2**20
    return folder / "X.npy", folder / "y.npy"


def headless_browser(offline: bool = False):
    """Headless chromium driven by selenium, or a skip naming what is missing. `offline`: every host but
    127.0.0.1 is unreachable, and ``requested_urls(browser)`` lists what the pages asked for."""
    webdriver = pytest.importorskip("selenium.webdriver")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                 "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(flag)
    if offline:
        options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)


def requested_urls(browser) -> list[str]:
    """Every URL the browser's pages requested since the last call (a browser made with ``offline=True``)."""
    import json

    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def unprivileged(command: list[str]) -> list[str]:
    """`command` without root's power to read and write past permissions (its capabilities dropped), so tests of
    unreadable and read-only places mean the same as root as for a user."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: every place is readable and writable")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]


def mixture_embeddings(n_classes: int = 6, per_class: int = 120, dim: int = 32, modes: int = 3,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Classes made of several sub-clusters, as real embeddings are."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, modes, dim)) * 2.0
    labels = np.repeat(np.arange(n_classes), per_class)
    mode = rng.integers(0, modes, size=len(labels))
    X = centres[labels, mode] + rng.normal(scale=0.6, size=(len(labels), dim))
    return X.astype(np.float32), labels


@pytest.fixture(scope="session")
def correlated() -> tuple[np.ndarray, np.ndarray]:
    """Four classes of unequal sizes sharing one correlated within-class covariance, labels in any order: the
    data the heads' closed forms are checked on."""
    rng = np.random.default_rng(5)
    d, K = 12, 4
    means = rng.normal(size=(K, d)) * 1.5
    A = rng.normal(size=(d, d)) * 0.4
    y = np.repeat(np.arange(K), [40, 25, 30, 35])
    X = means[y] + rng.normal(size=(len(y), d)) @ A
    order = rng.permutation(len(y))
    return X[order].astype(np.float64), y[order]


@pytest.fixture(scope="session")
def mixture() -> tuple[np.ndarray, np.ndarray]:
    return mixture_embeddings()


@pytest.fixture(scope="session")
def kept_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A function name -> folder kept across test runs (pytest's cache), or kept for this run only when the cache
    plug-in is off (``-p no:cacheprovider``)."""
    def make(name: str) -> Path:
        cache = getattr(request.config, "cache", None)
        return Path(cache.mkdir(name)) if cache is not None else tmp_path_factory.mktemp(name)

    return make


REAL_SUPPORT, REAL_TEST = 300, 100  # images per class of each real dataset, each embedded once a run
REAL_CHUNK = 400  # images embedded and kept together: test processes share the embedding of a dataset by chunks


@contextlib.contextmanager
def claimed(path: Path) -> Iterator[bool]:
    """Whether this process got the lock of `path` (``locked``'s lock file) without waiting; held while inside."""
    import fcntl

    from imprint.core.atomic import lock_file

    fd = os.open(lock_file(path), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)  # closing releases a lock taken here


@pytest.fixture(scope="session")
def real_embeddings(kept_dir):
    """Embeddings of real images by the packaged pretrained EfficientNet-Lite0, cached across runs.

    Returns a function dataset_name -> (X_support, y_support, X_test, y_test) with REAL_SUPPORT support and
    REAL_TEST test images per class, drawn disjointly with a fixed seed. The test processes embed a dataset
    together, chunk by chunk: one that needs a chunk another is embedding takes the next one instead of waiting.
    """
    from imprint.core.atomic import atomic_write_bytes, locked
    from imprint.data.builtin import load_dataset, per_class_split
    from imprint.encoders import create_encoder

    memory: dict[str, tuple] = {}
    encoder = create_encoder(device="cpu")
    cache_dir = kept_dir("imprint-embeddings")

    def load(name: str):
        if name not in memory:
            ds = load_dataset(name)
            support, test = per_class_split(ds.labels, REAL_SUPPORT, REAL_TEST, seed=0)
            rows = np.concatenate([support, test])
            key = f"{name}|{encoder.id}|{encoder.weights_id}|{REAL_SUPPORT}|{REAL_TEST}|0|{REAL_CHUNK}"
            key = hashlib.sha256(key.encode()).hexdigest()[:16]
            chunks = [(cache_dir / f"{name}-{key}-{start}.npy", rows[start:start + REAL_CHUNK])
                      for start in range(0, len(rows), REAL_CHUNK)]
            for path, chunk in chunks:  # the chunks no other process is embedding now
                with claimed(path) as mine:
                    if mine:
                        embed(ds.images, chunk, path)
            for path, chunk in chunks:  # then those it was: done when their lock is let go
                with locked(path):
                    embed(ds.images, chunk, path)
            X = np.concatenate([np.load(path) for path, _ in chunks])
            memory[name] = (X[:len(support)], ds.labels[support], X[len(support):], ds.labels[test])
        return memory[name]

    def embed(images: np.ndarray, chunk: np.ndarray, path: Path) -> None:
        if not path.is_file():
            buffer = io.BytesIO()
            np.save(buffer, encoder.encode_images(images[chunk]))
            atomic_write_bytes(path, buffer.getvalue())

    return load


TINY_OPEN_CLIP = {"embed_dim": 32,
                  "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


@pytest.fixture(scope="session")
def tiny_model_name(tmp_path_factory) -> str:
    """A small open_clip architecture, registered for this run, to use with random or saved weights."""
    import json

    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / "imprint-tiny-vit.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(folder)
    return "imprint-tiny-vit"


@pytest.fixture(scope="session")
def encoder():
    """The packaged EfficientNet-Lite0 on the CPU, built once for the whole run."""
    from imprint.encoders import create_encoder

    return create_encoder("lite0", device="cpu")


@pytest.fixture(scope="session")
def fashion(encoder, cache_dir):
    """Embeddings of the bundled images of every class but 'bag' (which the serving tests teach), through the
    suite's embedding cache."""
    from imprint.io.cache import EmbeddingCache
    from imprint.workflows.loader import embed_paths

    paths = [p for p in sorted(EXAMPLES.glob("*/*.png")) if p.parent.name != "bag"]
    X = embed_paths(encoder, paths, cache=EmbeddingCache(cache_dir), progress=False, strict=True).embeddings
    return X, np.array([p.parent.name for p in paths])


def served(tmp_path: Path, encoder, fashion, method: str = "simpleshot", keep_examples: bool = False,
           **options):
    """(a TestClient of the service for a classifier of `fashion` saved in `tmp_path`, its file); `options`:
    ServeOptions fields."""
    from fastapi.testclient import TestClient

    from imprint import ImprintClassifier
    from imprint.serve.app import ServeOptions, create_app
    from imprint.serve.live import LiveClassifier

    X, y = fashion
    path = tmp_path / "clf.safetensors"
    settings = {"reject": "max_score", "reject_rate": 0.05} if method == "rejecting" else {}
    ImprintClassifier(method="simpleshot" if method == "rejecting" else method, **settings).fit(
        X, y, keep_examples=keep_examples).save(path)
    live = LiveClassifier(path, ImprintClassifier.load(path), encoder, read_only=options.pop("read_only", False))
    return TestClient(create_app(live, ServeOptions(read_only=live.read_only, **options)),
                      base_url="http://localhost"), path


def images(paths) -> list:
    """Multipart form parts named 'images' of the image files `paths`."""
    return [("images", (p.name, p.read_bytes(), "image/png")) for p in paths]
