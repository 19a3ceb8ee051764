"""The ``imprint`` argument parser. Classifier flags are derived from the declared settings
(``imprint.core.settings``, which import without torch), so every stage's settings, plug-ins' included, are flags
with their own help, and a typo is one line."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from imprint.core.settings import Setting


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (no usage block) with a pointer to --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"imprint: error: {message} (see: {self.prog} --help)\n")


def _setting_type(setting: Setting) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = setting.name
    return parse


def _checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type for a path or a name: `check` (cheap: nothing heavy imported, nothing large read) refuses
    it with a one-line message before the command starts its slow work."""
    from imprint.core.errors import UserError

    def parse(text: str) -> str:
        try:
            check(text)
        except (UserError, OSError) as exc:
            raise argparse.ArgumentTypeError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        return text

    parse.__name__ = getattr(check, "__name__", "value")
    return parse


def _classifier_file(text: str) -> None:
    from imprint.io.classifier_file import read_header

    read_header(text)


def _source(text: str) -> None:
    from imprint.workflows.sources import check_source

    check_source(text)


def _preset(text: str) -> None:
    from imprint.core.presets import preset_settings

    preset_settings(text)


def _grid_results(text: str) -> None:
    from imprint.grid.manifest import read_manifest

    read_manifest(text)


def _existing_file(text: str) -> None:
    if not os.path.isfile(text):
        raise FileNotFoundError(f"file not found: {text}")


CLASSIFIER_FILE, SOURCE, PRESET, GRID_RESULTS, EXISTING_FILE = (
    _checked(check) for check in (_classifier_file, _source, _preset, _grid_results, _existing_file))


def add_setting_options(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ("device", "seed")) -> None:
    """One flag per classifier setting (default: the preset's, else the classifier's), grouped by the stage
    that uses it; read from the declarations, which import without torch (``imprint.core.settings``)."""
    from imprint.core.presets import PRESETS
    from imprint.core.settings import SETTINGS
    from imprint.estimator.configuration import parameter_names

    parser.add_argument("--preset", default=None, metavar="NAME", type=PRESET,
                        help=f"start from a published method: {', '.join(PRESETS)}, or auto (chosen on the support "
                             "set; the default when no stage flag is given); flags below override it (see: imprint "
                             "presets)")
    import textwrap

    group = parser.add_argument_group(
        "classifier settings (ImprintClassifier; auto: chosen on the support set)", textwrap.fill(
            "With no preset and no stage flag, a fit runs --method auto: the published method that cross-validates "
            "best on the support set, with that method's own stages (Tukey + GDA on most data: tukey / mean / "
            "mahalanobis; 'imprint info' shows the one chosen). The stage defaults shown below are what runs once a "
            "stage flag is given (--method custom).", 79))
    names = [name for name in parameter_names() if name not in skip]
    parser.set_defaults(setting_names=names)  # the settings a command may find given in its namespace
    for name in names:
        setting, users = SETTINGS[name], SETTINGS.users(name)
        used_by = f" [{'/'.join(sorted({f'{kind} {stage}' for kind, stage in users}))}]" if users else ""
        default = f"{setting.default}, with a stage flag; else the chosen method's" if setting.name in STAGE_SLOTS \
            else setting.default
        help_text = f"{setting.help}; {setting.allowed()} (default: {default}){used_by}"
        group.add_argument("--" + setting.name.replace("_", "-"), dest=setting.name, type=_setting_type(setting),
                           default=argparse.SUPPRESS, metavar=setting.name.upper(), help=help_text.replace("%", "%%"))


def add_encoding_options(parser: argparse.ArgumentParser, serving: bool = False) -> None:
    """The encoder's flags (`serving`: only those a server uses: no cache, batches or progress bars)."""
    parser.add_argument("--encoder", default=None,
                        help="encoder id, e.g. timm:tf_efficientnet_lite0 (default), lite1, lite2, "
                             "open_clip:ViT-B-32/laion2b_s34b_b79k")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, mps")
    parser.add_argument("--runtime", choices=["auto", "torch", "onnx", "openvino", "openvino-bf16"], default="auto",
                        help="what runs the encoder: auto (on the CPU the faster of ONNX Runtime and OpenVINO, "
                             "measured once per machine, 2-3x torch; torch on a GPU), torch, onnx, openvino, or "
                             "openvino-bf16 (lower precision, asked for by name only: about 2x openvino on CPUs "
                             "with AMX, other embeddings)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for the encoder (default: the cores not busy with other work)")
    if serving:
        return
    parser.add_argument("--batch-size", type=int, default=64, help="images per encoder batch (default: 64)")
    parser.add_argument("--workers", type=int, default=None,
                        help="image decoding processes (default: chosen for the machine)")
    parser.add_argument("--cache-dir", default=None, help="embedding cache folder (default: user cache dir)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--strict", action="store_true", help="unreadable images are an error, not a warning")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _force_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="replace an existing output that imprint did not write (an input is never replaced)")


def _plugin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first: its stages and settings become available (repeatable)")


STAGE_SLOTS = ("norm_pre", "generation", "norm_post", "norm_inf", "metric", "aggregation")  # what a method sets
WITH_SETTINGS = ("fit", "fewshot")  # commands with a flag for every classifier setting


def build_parser(commands: dict[str, Callable[[argparse.Namespace], None]], settings: bool = True) -> Parser:
    """The parser; `commands` maps each subcommand name to the function that runs it; with `settings`, fit and
    fewshot take a flag per classifier setting (without, a parse for any other command skips building them)."""
    parser = Parser(prog="imprint", description="Training-free classifiers from the embeddings of a frozen image "
                    "model (weight imprinting and closed-form heads). "
                    "Start with: imprint fit FOLDER -o clf.safetensors")
    _plugin_option(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def command(name: str, help_text: str, **kwargs: Any) -> Parser:
        p = sub.add_parser(name, help=help_text, description=help_text, **kwargs)
        _plugin_option(p)
        p.set_defaults(run=commands[name])
        return p

    p = command("fit", "imprint a classifier from an image folder (DIR/<class>/<image>), a store or an "
                       "embeddings file from 'imprint embed'", epilog=_stages_epilog() if settings else None,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=SOURCE,
                   help="image folder DIR/<class>/<image>, store folder or FILE.npz from 'imprint embed'")
    p.add_argument("-o", "--output", required=True, help="classifier file to write (.safetensors)")
    p.add_argument("--shots", type=int, default=None, help="use N images per class (few-shot)")
    p.add_argument("--test-fraction", type=float, default=None,
                   help="hold out this share of every class and report accuracy on it")
    p.add_argument("--test-dir", default=None, type=SOURCE, help="a second labelled folder to evaluate on")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the few-shot draw and the classifier")
    p.add_argument("--keep-examples", action="store_true", help="keep the support embeddings in the file, so "
                   "'imprint serve' can give any class more examples (the file grows by 4 bytes per value)")
    p.add_argument("--zero-shot", action="store_true", help="blend zero-shot text scores of each class's folder "
                   "name into the class scores (CLIP encoders; weight --text-alpha, auto: chosen by cross-validation "
                   "on the support set); with --text-alpha none the text joins the support set instead, and empty "
                   "class folders are then imprinted from text alone")
    p.add_argument("--templates", default=None, type=EXISTING_FILE,
                   help="prompt templates file, one per line with {} for the name")
    _force_option(p)
    add_encoding_options(p)
    if settings:
        add_setting_options(p)

    p = command("predict", "predict images or folders of images with a saved classifier")
    p.add_argument("classifier", type=CLASSIFIER_FILE, help="classifier file from 'imprint fit' (.safetensors)")
    p.add_argument("paths", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders searched for images")
    p.add_argument("-o", "--output", default=None, help="write the predictions to this file (CSV, or JSON for .json)")
    p.add_argument("--top-k", type=int, default=3, help="alternatives listed per image")
    p.add_argument("--format", choices=("auto", "table", "csv", "json"), default="auto",
                   help="auto: a table on a terminal, CSV when piped or written to a file")
    _force_option(p)
    add_encoding_options(p)

    p = command("eval", "accuracy, chance level, macro-F1 and a per-class table on a labelled folder")
    p.add_argument("classifier", type=CLASSIFIER_FILE, help="classifier file from 'imprint fit' (.safetensors)")
    p.add_argument("folder", type=SOURCE,
                   help="labelled image folder DIR/<class>/<image> (classes the classifier knows)")
    p.add_argument("--confusion", default=None, help="write a confusion-matrix picture (PNG)")
    p.add_argument("--calibration", default=None, metavar="PNG",
                   help="write a reliability diagram of the probabilities (PNG), with their calibration error")
    p.add_argument("--unknown", default=None, type=SOURCE, metavar="FOLDER",
                   help="images of none of the classes: report open-set metrics (needs a classifier with --reject)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    _force_option(p)
    add_encoding_options(p)

    p = command("embed", "embed an image folder (DIR/<class>/<image>) into FILE.npz or a memory-mapped store "
                         "folder (resumable)")
    p.add_argument("folder", type=SOURCE, help="image folder DIR/<class>/<image>")
    p.add_argument("-o", "--output", required=True,
                   help="FILE.npz (in memory), or a folder: memory-mapped store, written as it goes; rerun to resume")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="ray: Ray Data map_batches with encoder actors (store output only)")
    p.add_argument("--actors", type=int, default=None, help="Ray encoder actors (default: one per GPU, else 1)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local one)")
    _force_option(p)
    add_encoding_options(p)

    p = command("export", "write a classifier as one ONNX graph from images to answers (runs with onnxruntime "
                          "alone; see examples/onnx_predict.py)")
    p.add_argument("classifier", type=CLASSIFIER_FILE, help="classifier file from 'imprint fit' (.safetensors)")
    p.add_argument("-o", "--output", required=True, help="the ONNX model to write (.onnx)")
    p.add_argument("--encoder", default=None, help="the encoder, where the classifier records one imprint does not "
                   "build from a file alone (it must be the one it was fitted with)")
    _force_option(p)

    p = command("serve", "serve a classifier over HTTP: predict, teach and remove classes by example, a page at /")
    p.add_argument("classifier", type=CLASSIFIER_FILE, help="classifier file (.safetensors); class changes are "
                   "saved to it, the file they replace kept as NAME.previous.safetensors")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                   "only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--read-only", action="store_true", help="predict only: no class changes, the file untouched")
    p.add_argument("--token-file", default=None, type=EXISTING_FILE, help="file whose first line is a token that "
                   "class changes must send ('Authorization: Bearer TOKEN'; default: $IMPRINT_SERVE_TOKEN, else "
                   "none needed)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME", help="a host name the server is "
                   "reached by, besides this machine's names and addresses (repeat for more; '*' for any)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN", help="a web page origin "
                   "(scheme://host[:port]) whose requests may predict and change classes, besides the server's own "
                   "page (repeat for more)")
    p.add_argument("--max-images", type=int, default=64, help="images per request at most (default: 64)")
    p.add_argument("--max-image-mb", type=float, default=20.0, help="megabytes per image at most (default: 20)")
    p.add_argument("--max-request-mb", type=float, default=100.0, help="megabytes per request at most "
                   "(default: 100)")
    p.add_argument("--memory-mb", type=float, default=1024.0, help="memory that request bodies and decoded images "
                   "may hold at once; past it a request is answered 503 with Retry-After (default: 1024; an image "
                   "may take half)")
    p.add_argument("--max-queue", type=int, default=256, help="images in progress at once; past it a request is "
                   "answered 503 with Retry-After (default: 256)")
    add_encoding_options(p, serving=True)

    p = command("inspect", "find likely wrong labels, duplicates and test leaks, outliers, class health and the "
                           "images to label next; writes a report folder (CSV, JSON and an HTML page)")
    p.add_argument("source", type=SOURCE, help="labelled image folder DIR/<class>/<image>, store folder or FILE.npz")
    p.add_argument("-o", "--output", required=True, help="report folder to write (new, empty or an earlier report)")
    p.add_argument("--test-dir", default=None, type=SOURCE,
                   help="a test folder: its near copies of support images are leaks")
    p.add_argument("--unlabelled", default=None, type=SOURCE, metavar="FOLDER",
                   help="unlabelled images to rank for labelling")
    p.add_argument("--budget", type=int, default=None, help="images to pick from --unlabelled (default: 50)")
    p.add_argument("--preset", default="gda", type=PRESET, help="the classifier fitted without each image to judge it "
                   "(default: gda; 'imprint presets' lists them)")
    p.add_argument("--folds", type=int, default=5, help="cross-fitting folds (default: 5)")
    p.add_argument("--reject", default="knn", help="unknown score that finds outliers (default: knn)")
    p.add_argument("--outlier-rate", type=float, default=0.01,
                   help="share of the support set flagged as outliers: the highest unknown scores, at least one "
                   "image (default: 0.01)")
    p.add_argument("--duplicate-threshold", type=float, default=0.92,
                   help="embedding cosine from which two images may be near copies (default: 0.92)")
    p.add_argument("--pixel-threshold", type=float, default=0.98,
                   help="cosine of 16x16 grey thumbnails from which two images may be near copies (default: 0.98)")
    p.add_argument("--fix", action="store_true", help="also write relabelled.csv: every support image with the "
                   "suggested label where one is flagged (your files are never changed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and the clustering (default: 0)")
    _force_option(p)
    add_encoding_options(p)

    p = command("info", "describe a saved classifier (no model is loaded)")
    p.add_argument("classifier", type=CLASSIFIER_FILE, help="classifier file from 'imprint fit' (.safetensors)")
    p.add_argument("--json", action="store_true", help="the description as JSON")

    p = command("presets", "list the published methods that --preset and from_preset() name")
    p.add_argument("--json", action="store_true", help="the presets as JSON")

    p = command("collapse", "neural-collapse report of a labelled folder, store or embeddings file")
    p.add_argument("source", type=SOURCE, help="image folder, store folder or FILE.npz from 'imprint embed'")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    add_encoding_options(p)

    p = command("fewshot", "n-way k-shot episodes: mean accuracy and its 95 percent confidence interval")
    p.add_argument("source", type=SOURCE, help="image folder, store folder or FILE.npz from 'imprint embed'")
    p.add_argument("--ways", type=int, default=5, help="classes per episode (default: 5)")
    p.add_argument("--shots", type=int, default=1, help="support images per class and episode (default: 1)")
    p.add_argument("--queries", type=int, default=15, help="query images per class and episode (default: 15)")
    p.add_argument("--episodes", type=int, default=600, help="episodes averaged (default: 600)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episode draws (default: 0)")
    add_encoding_options(p)
    if settings:
        add_setting_options(p)

    p = command("grid", "run a YAML grid of variants x encoders x datasets x tasks (resumable)")
    p.add_argument("config", type=EXISTING_FILE, help="YAML grid config (see configs/)")
    p.add_argument("--out", required=True, help="results folder; a rerun skips the cells already there")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel processes for the cells (default: cores, once the cells left would take more than "
                        "20 s in one)")
    p.add_argument("--cache-dir", default=None, help="embedding cache folder (default: user cache dir)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _force_option(p)

    p = command("report", "write results.csv, summary.md and figures of a grid folder")
    p.add_argument("folder", type=GRID_RESULTS, help="results folder of 'imprint grid'")

    p = command("cache", "inspect or clear the embedding cache and the encoder graphs (both rebuilt when needed)")
    p.add_argument("action", choices=("info", "clear"), help="info: where it is and its size; clear: remove its "
                   "entries (and nothing else)")
    p.add_argument("--cache-dir", default=None, help="embedding cache folder (default: user cache dir)")
    return parser


def _stages_epilog() -> str:
    from imprint.stages import AGGREGATIONS, GENERATORS, METRICS, NORMS

    titles = ((GENERATORS, "generation"), (NORMS, "normalisation (chain with +, e.g. center+l2)"),
              (METRICS, "metric (head)"), (AGGREGATIONS, "aggregation"))
    return "stages:\n\n" + "\n\n".join(
        f"{title}:\n" + "\n".join("  " + line for line in registry.describe().splitlines())
        for registry, title in titles)


def command_in(argv: list[str], names: list[str]) -> str | None:
    """The subcommand named in `argv` (the first word that is one), if any."""
    return next((arg for arg in argv if arg in names), None)


def plugins_in(argv: list[str]) -> list[str]:
    """The --plugin modules named anywhere in `argv` (they must be imported before the parser is built)."""
    found = []
    for i, arg in enumerate(argv):
        if arg == "--plugin" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith("--plugin="):
            found.append(arg.split("=", 1)[1])
    return found


def print_error(message: str) -> None:
    """One error line; control characters (from file names or file contents) escaped."""
    from imprint.core.errors import printable

    print(f"imprint: error: {printable(message, 2000)}", file=sys.stderr)
