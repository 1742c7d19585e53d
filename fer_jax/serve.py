"""A local web page and a JSON endpoint that explain a model's predictions on an uploaded photo.

  python -m fer_jax.serve [--workdir=RUN | --export=DIR] [--host=127.0.0.1] [--port=8000]
      [--cam=gradcam++] [--cams=gradcam,gradcam++,layercam]

Without --workdir or --export it serves the model shipped in the package
(fer_jax.pretrained.DEFAULT). --export serves an artifact of `python -m fer_jax.export`
through fer_jax.serving: the same page, its menu the artifact's maps, no layer attention.
Open http://127.0.0.1:8000/, drop or pick a photo: every face is boxed, and each face
gets its probabilities (bars), the AU map of its predicted expression, the CAM of the
method chosen in the menu, and the agreement of the two (CAM-COS, ATT-COS).

Endpoints (FastAPI, served by uvicorn):
  GET  /              the page (fer_jax/serve_page/: one HTML file, a script, a style sheet)
  GET  /api/info      the model: class names, the CAM menu, the upload limits
  POST /api/predict   multipart field `file`; query `cam=METHOD`, `maps=true` for the pictures.
                      200: {"rows": [...]} (the rows of predict's predictions.jsonl, `path`
                      the uploaded file's name), the photo's size, and with maps=true one
                      {"face", "crop", "cam", "attention", "au_map"} of PNG data URLs a face.
                      4xx: {"detail": reason}: 400 empty upload or unknown method, 413 over
                      the byte limit, 415 not an image, 422 too many pixels or no face.

Every photo goes through predict.Predictor (the same reading, face finding, crops,
model input and agreement as `python -m fer_jax.predict`; for --export, ExportedPredictor,
predict's Predictor with the artifact as its model); the upload is written to a
temporary folder for it and removed with it. One photo is explained at a time (a lock):
the model and dlib run on every core already.
"""
import base64
import os
import tempfile
import threading
from typing import Annotated, Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from data_prep import faces
from fer_jax import cams, errors, plots, predict, runs, serving

PAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve_page")
DEFAULT_CAM = "gradcam++"            # predict's default method: the menu's first choice
MAX_UPLOAD_BYTES = 10 * 2 ** 20      # request body limit (Content-Length and streamed bytes)
MAX_SIDE = 8192                      # longest image side taken, in pixels (read from the header)
MAX_PIXELS = 40_000_000              # width * height taken (about 120 MB decoded as RGB)
MAX_FACES = 8                        # faces explained per photo (the largest)
_BATCH = 4                           # faces per forward pass: one compiled shape a method
_NAME_CHARS = 120                    # an uploaded file's name is echoed at most this long


class UploadError(Exception):
    """A bad upload: the HTTP status (4xx) and the reason the page shows."""

    def __init__(self, status: int, reason: str, rows: Sequence[Dict[str, Any]] = ()):
        super().__init__(reason)
        self.status, self.reason, self.rows = status, reason, list(rows)


class ExportedPredictor(predict.Predictor):
    """predict.Predictor over an exported model (fer_jax.serving) instead of a live one: the
    same reading, faces, crop (the contract's rule and side), model input and AU agreement.
    The artifact returns probabilities and maps only: no layer attention, no ATT-COS."""

    def __init__(self, served: serving.Served, cam: str, batch_size: int = _BATCH,
                 max_faces: Optional[int] = None):
        # Not super().__init__, which builds the live model: the same settings from the
        # contract (tests/test_serve.py checks the rows against the live model's).
        rule = served.contract["input"]
        self._served = served
        self.variables = {}   # the parameters are constants inside the artifact
        self._configure(served.class_names, served.image_size, int(rule["crop_size"]),
                        faces.InputRule.from_json(rule), cam, self._exported,
                        served.batch_size or batch_size, max_faces, detect=True, workers=1,
                        preview_side=0)

    def _exported(self, variables: Any, images: Any) -> Tuple[Any, ...]:
        """predict._infer's outputs from the artifact: attention and features None."""
        x = np.asarray(images)
        n = len(x)
        if self._served.batch_size:   # an artifact of a fixed batch size: pad to it
            x = np.concatenate([x, np.zeros((self._served.batch_size - n,) + x.shape[1:],
                                            x.dtype)])
        probabilities, maps = self._served(x)
        return (probabilities[:n], probabilities[:n].argmax(-1),
                {m: v[:n] for m, v in maps.items()}, None, None)


class Explainer:
    """The model behind the page: one predict.Predictor per CAM method of the menu, made on
    first use (a live model's compiles then), all sharing one restored run or artifact."""

    def __init__(self, make: Callable[[str], predict.Predictor], name: str,
                 class_names: Sequence[str], methods: Sequence[str], default: Optional[str] = None,
                 max_faces: int = MAX_FACES):
        self.make, self.name = make, name
        self.class_names, self.methods = list(class_names), list(methods)
        default = default or (DEFAULT_CAM if DEFAULT_CAM in self.methods else self.methods[0])
        if default not in self.methods:
            raise errors.ConfigError(f"--cam={default!r} is not in the menu {self.methods}")
        if max_faces < 1:
            raise errors.ConfigError(f"--max_faces={max_faces}: expected >= 1")
        self.default, self.max_faces = default, max_faces
        self._predictors: Dict[str, predict.Predictor] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_workdir(cls, workdir: str, methods: Sequence[str] = (),
                     default: Optional[str] = None, max_faces: int = MAX_FACES) -> "Explainer":
        """A training run's latest checkpoint, or a shipped model's folder. methods: the
        menu; () = every method that applies to the model, less the chance-level rows."""
        restored = runs.restore(workdir)
        menu = list(methods) or [m for m in cams.applicable(restored.model)
                                 if not cams.REGISTRY[m].reference]

        def make(method: str) -> predict.Predictor:
            # In-process reading (workers=1): one photo at a time gains nothing from a pool.
            return predict.Predictor(restored, cam=method, batch_size=_BATCH,
                                     max_faces=max_faces, workers=1)
        return cls(make, os.path.basename(os.path.normpath(workdir)), restored.class_names,
                   cams.select(menu, restored.model, key="serve.cams"), default, max_faces)

    @classmethod
    def from_export(cls, folder: str, methods: Sequence[str] = (),
                    default: Optional[str] = None, max_faces: int = MAX_FACES) -> "Explainer":
        """An exported model (`python -m fer_jax.export`); methods: the menu, among the
        artifact's maps (() = all of them)."""
        served = serving.load(folder)
        unknown = [m for m in methods if m not in served.methods]
        if unknown:
            raise errors.ConfigError(f"--cams: {unknown} not in the exported maps "
                                     f"{served.methods} of {folder}")

        def make(method: str) -> predict.Predictor:
            return ExportedPredictor(served, method, max_faces=max_faces)
        name = f"{served.contract.get('model', '?')} (exported: {os.path.normpath(folder)})"
        return cls(make, name, served.class_names, list(methods) or served.methods, default,
                   max_faces)

    def predictor(self, method: str) -> predict.Predictor:
        """The Predictor of a method of the menu (made on first use); UploadError 400 for
        a method the menu lacks."""
        if method not in self.methods:
            raise UploadError(400, f"unknown CAM method {method!r}; the menu: {self.methods}")
        with self._lock:
            if method not in self._predictors:
                self._predictors[method] = self.make(method)
            return self._predictors[method]

    def explain(self, path: str, method: str
                ) -> Tuple[faces.PreparedPhoto, List[predict.FaceResult]]:
        """predict.Predictor.predict_many on one photo file with `method`'s CAM."""
        predictor = self.predictor(method)
        with self._lock:
            return next(predictor.predict_many([path]))


def png_url(rgb: np.ndarray) -> str:
    """An (H, W, 3) uint8 RGB picture as a PNG data URL."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok, "OpenCV could not encode a PNG"
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")


def face_pictures(row: predict.FaceResult) -> Dict[str, Any]:
    """The face's tiles (plots.face_tile, as predict's pictures): crop, CAM, attention and
    AU map overlays as PNG data URLs; au_map None where the face has none, attention None
    for an exported model."""
    assert row.crop is not None
    return {"face": row.face,
            "crop": png_url(plots.face_tile(row.crop)),
            "cam": png_url(plots.face_tile(row.crop, row.cam)),
            "attention": None if row.attention is None else png_url(
                plots.face_tile(row.crop, row.attention)),
            "au_map": None if row.au_map is None else png_url(plots.face_tile(row.crop,
                                                                              row.au_map))}


def check_pixels(data: bytes, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS) -> None:
    """UploadError 422 if the image header says it is larger than the limits (nothing is
    decoded); a header that cannot be read is left to predict's reader to judge."""
    size = faces._header_size(data)   # data_prep's reader bounds its decodes with it too
    if size is None:
        return
    width, height = size
    if max(width, height) > max_side or width * height > max_pixels:
        raise UploadError(422, f"image too large: {width} x {height} px; this server takes at "
                          f"most {max_side} px on a side and {max_pixels / 1e6:g} megapixels")


def explain_upload(explainer: Explainer, data: bytes, filename: str, method: str,
                   with_maps: bool, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS
                   ) -> Dict[str, Any]:
    """The JSON answer for one uploaded photo, or UploadError with its status and reason.

    The bytes are written to a fresh temporary folder, which is removed afterwards, for
    predict's reader (the same decoding, EXIF rotation and size bounds as the command).
    """
    name = os.path.basename(filename or "upload")[:_NAME_CHARS] or "upload"
    if not data:
        raise UploadError(400, f"empty upload: {name} has 0 bytes")
    check_pixels(data, max_side, max_pixels)
    with tempfile.TemporaryDirectory(prefix="fer_jax_serve_") as folder:
        path = os.path.join(folder, "upload")
        with open(path, "wb") as f:
            f.write(data)
        photo, rows = explainer.explain(path, method)
    # The rows name the uploaded file, not the temporary one.
    for row in rows:
        row.path, row.reason = name, row.reason.replace(path, name)
    table = [row.to_json() for row in rows]
    if photo.status == predict.UNREADABLE:
        raise UploadError(415, f"not an image: {rows[0].reason}", table)
    if photo.status == predict.NO_FACE:
        raise UploadError(422, f"no face found in {name}", table)
    assert photo.shape is not None   # an "ok" photo was decoded
    answer: Dict[str, Any] = {
        "file": name, "cam_method": method, "class_names": explainer.class_names,
        # File pixels, the frame of the boxes and landmarks.
        "width": round(photo.shape[1] / photo.scale), "height": round(photo.shape[0] / photo.scale),
        "rows": table}
    if with_maps:
        answer["maps"] = [face_pictures(row) for row in rows]
    return answer


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets a 413 with `detail` as JSON,
    refused by its Content-Length before a byte is read, or stopped once the streamed bytes
    pass the limit (a chunked or lying body). Starlette's own limiter answers a bare
    "Content Too Large" that does not say the limit."""

    def __init__(self, app: Any, limit: int, detail: str):
        self.app, self.limit, self.detail = app, limit, detail

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from starlette.datastructures import Headers
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await JSONResponse({"detail": self.detail}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # An HTTPException: FastAPI's form parsing passes it on unchanged.
                    raise HTTPException(413, self.detail)
            return message

        await self.app(scope, counted, send)


def create_app(explainer: Explainer, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS) -> Any:
    """The FastAPI application: the page, /api/info and /api/predict (module docstring)."""
    from fastapi import FastAPI, File, Query, Request, UploadFile
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    app = FastAPI(title="fer_jax")
    limit = (f"{max_upload_bytes / 2 ** 20:g} MB" if max_upload_bytes >= 2 ** 20
             else f"{max_upload_bytes} bytes")
    app.add_middleware(BodyLimit, limit=max_upload_bytes,
                       detail=f"upload too large: the limit is {limit}")

    @app.exception_handler(UploadError)
    def _bad_upload(request: Request, e: UploadError) -> JSONResponse:
        content: Dict[str, Any] = {"detail": e.reason}
        if e.rows:
            content["rows"] = e.rows
        return JSONResponse(content, status_code=e.status)

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(os.path.join(PAGE_DIR, "index.html"))

    @app.get("/api/info")
    def info() -> Dict[str, Any]:
        return {"model": explainer.name, "class_names": explainer.class_names,
                "methods": explainer.methods, "default_method": explainer.default,
                "max_upload_bytes": max_upload_bytes, "max_side": max_side,
                "max_pixels": max_pixels, "max_faces": explainer.max_faces}

    # A plain `def`: FastAPI runs it in its thread pool, so the server keeps answering
    # (the page, /api/info, other uploads' 4xx) while a photo is explained.
    @app.post("/api/predict")
    def predict_photo(file: Annotated[UploadFile, File()],
                      cam: Annotated[Optional[str], Query()] = None,
                      maps: Annotated[bool, Query()] = False) -> Dict[str, Any]:
        data = file.file.read(max_upload_bytes + 1)
        return explain_upload(explainer, data, file.filename or "upload",
                              cam or explainer.default, maps, max_side, max_pixels)

    app.mount("/static", StaticFiles(directory=PAGE_DIR), name="static")
    return app


# --- Command line ---------------------------------------------------------------

def main(argv: Sequence[str]) -> None:
    import sys

    import uvicorn
    from absl import flags

    from fer_jax import cli, pretrained
    cli.start(argv)
    FLAGS = flags.FLAGS
    try:
        if FLAGS.max_upload_mb <= 0:
            raise errors.ConfigError(f"--max_upload_mb={FLAGS.max_upload_mb}: expected > 0")
        if FLAGS.workdir and FLAGS.export:
            raise errors.ConfigError("give at most one of --workdir=RUN or --export=DIR")
        menu = tuple(m for m in (FLAGS.cams or "").split(",") if m)
        if FLAGS.export:
            explainer = Explainer.from_export(FLAGS.export, menu, FLAGS.cam, FLAGS.max_faces)
        else:
            explainer = Explainer.from_workdir(FLAGS.workdir or pretrained.path(), menu,
                                               FLAGS.cam, FLAGS.max_faces)
    except (errors.ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    app = create_app(explainer, int(FLAGS.max_upload_mb * 2 ** 20))
    print(f"fer_jax.serve: {explainer.name} on http://{FLAGS.host}:{FLAGS.port}/ "
          "(the first photo of each CAM method compiles it: seconds)", flush=True)
    uvicorn.run(app, host=FLAGS.host, port=FLAGS.port, log_level="warning")


def _define_flags() -> None:
    from absl import flags
    flags.DEFINE_string("workdir", None, "A training run (its run.json and checkpoints/); "
                        "without it: the shipped FER2013 mini-Xception.")
    flags.DEFINE_string("host", "127.0.0.1", "Address to bind (127.0.0.1: this machine only).")
    flags.DEFINE_integer("port", 8000, "Port to listen on.")
    flags.DEFINE_string("export", None, "Or: an exported model (python -m fer_jax.export "
                        "--output=DIR), run through fer_jax.serving.")
    flags.DEFINE_string("cam", None, f"The CAM method the page starts with (default: {DEFAULT_CAM} "
                        "if in the menu, else the menu's first).")
    flags.DEFINE_string("cams", None, "Comma-separated CAM methods of the menu (default: every "
                        "method that applies to the model, less the random and centre rows; "
                        "with --export: the artifact's maps).")
    flags.DEFINE_integer("max_faces", MAX_FACES, "Faces explained per photo (the largest).")
    flags.DEFINE_float("max_upload_mb", MAX_UPLOAD_BYTES / 2 ** 20, "Upload size limit (MiB).")


if __name__ == "__main__":
    from fer_jax import cli
    _define_flags()
    cli.run(main)
