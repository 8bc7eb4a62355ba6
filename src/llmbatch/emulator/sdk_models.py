"""The model ids the installed official SDKs name, read from their source files.

The emulator's built-in catalog (`models.py`) starts from these, so that it accepts exactly
the names the client you have installed can send. The files are parsed with `ast`, not
imported (importing the SDKs costs seconds of start-up); a file that moved or is missing
gives no ids, and the family tables of `models.py` still answer.

- `openai`: the `Literal`s of `ChatModel`, `ResponsesModel`, the embedding, moderation,
  image, video, audio and legacy-completions model types, each giving the endpoint kinds
  it serves.
- `anthropic`: the `Literal` of `Model`.
- `google-genai` (the Gemini door): the SDK has no model type; the only list it carries is
  the local tokenizer's table of Gemini models (`_local_tokenizer_loader.py`, plain dict
  literals). Their supported methods follow from the name (`gemini_methods`).
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

_CHAT = frozenset({"chat", "responses"})

#: (file under the package, the literal's name or `model` for a params class, kinds).
_OPENAI_LITERALS: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("types/shared/chat_model.py", "ChatModel", _CHAT),
    ("types/shared/responses_model.py", "ResponsesModel", frozenset({"responses"})),
    ("types/completion_create_params.py", "model", frozenset({"completions"})),
    ("types/embedding_model.py", "EmbeddingModel", frozenset({"embeddings"})),
    ("types/moderation_model.py", "ModerationModel", frozenset({"moderations"})),
    ("types/image_model.py", "ImageModel", frozenset({"images"})),
    ("types/video_model.py", "VideoModel", frozenset({"videos"})),
    ("types/audio_model.py", "AudioModel", frozenset({"audio"})),
    ("types/audio/speech_model.py", "SpeechModel", frozenset({"audio"})),
)
_ANTHROPIC_LITERALS = (("types/model.py", "Model", frozenset({"messages"})),)
#: google-genai's tables of Gemini models (model -> tokenizer), read for their keys.
_GENAI_FILE = "_local_tokenizer_loader.py"
_GENAI_TABLES = (
    "_GEMINI_MODELS_TO_TOKENIZER_NAMES",
    "_GEMINI_STABLE_MODELS_TO_TOKENIZER_NAMES",
    "_GEMINI_MODELS_TO_HUGGINGFACE_TOKENIZER_NAMES",
)

#: The `supportedGenerationMethods` of Gemini models, as the service's ListModels names them.
GEMINI_GENERATE = frozenset(
    {"generateContent", "countTokens", "createCachedContent", "batchGenerateContent"}
)
GEMINI_EMBED = frozenset({"embedContent", "countTokens", "asyncBatchEmbedContent"})
#: Live models answer only over the Live API's socket: a batch of them is refused.
GEMINI_LIVE = frozenset({"bidiGenerateContent"})


def gemini_methods(model_id: str) -> frozenset[str]:
    """The methods a Gemini model serves, from its name."""
    if "embedding" in model_id:
        return GEMINI_EMBED
    if "-live" in model_id or model_id.startswith("gemini-live"):
        return GEMINI_LIVE
    return GEMINI_GENERATE


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)  # the module itself is not imported
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None


def _literal_strings(node: ast.AST) -> list[str]:
    """Every string inside a `Literal[...]` within `node`, in source order."""
    out: list[str] = []
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Subscript)
            and isinstance(sub.value, ast.Name)
            and sub.value.id == "Literal"
        ):
            out += [
                c.value
                for c in ast.walk(sub.slice)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            ]
    return out


def literal_ids(path: Path, name: str) -> list[str]:
    """The strings of the `Literal`s in the type alias `name` of a source file, or, for
    `name="model"`, in the annotation of a class field `model` (a params class)."""
    tree = _parse(path)
    if tree is None:
        return []
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id != name:
                continue
            return _literal_strings(node.annotation if name == "model" else node.value or node)
        named = isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        )
        if name != "model" and named and isinstance(node, ast.Assign):
            return _literal_strings(node.value)
    return []


def dict_keys(path: Path, names: tuple[str, ...]) -> list[str]:
    """The string keys of the module-level dict literals assigned to `names` in a file."""
    tree = _parse(path)
    out: list[str] = []
    for node in tree.body if tree is not None else ():
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)):
            continue
        if any(isinstance(t, ast.Name) and t.id in names for t in node.targets):
            keys = node.value.keys
            out += [
                k.value for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
            ]
    return out


@cache
def sdk_models(door: str) -> dict[str, frozenset[str]]:
    """Model id -> endpoint kinds (Gemini: methods), as the installed SDK of `door` lists
    them (cached; empty when the SDK is not installed)."""
    found: dict[str, frozenset[str]] = {}
    if door == "gemini":
        root = _package_dir("google.genai")
        for model_id in dict_keys(root / _GENAI_FILE, _GENAI_TABLES) if root else ():
            found[model_id] = gemini_methods(model_id)
        return found
    package, sources = (
        ("openai", _OPENAI_LITERALS) if door == "openai" else ("anthropic", _ANTHROPIC_LITERALS)
    )
    root = _package_dir(package)
    if root is None:
        return found
    for relative, name, kinds in sources:
        for model_id in literal_ids(root / relative, name):
            found[model_id] = found.get(model_id, frozenset()) | kinds
    return found
