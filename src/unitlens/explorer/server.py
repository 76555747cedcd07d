"""The explorer's web app (FastAPI on uvicorn): the front end, a read-only JSON API over the catalog, thumbnails
and figures, and the live lens (text search, image probes, concept labels).

Routes::

    /  /atlas/<name>  /atlas/<name>/layer/<layer>  /atlas/<name>/layer/<layer>/unit/<i>  /atlas/<name>/search
    /study/<name>                                       the front end (404 status for a name, layer or unit not served)
    /api/catalog  /api/atlas/<name>  .../layer/<layer>  .../layer/<layer>/map  .../layer/<layer>/unit/<i>
    /api/atlas/<name>/thumb/<id>  /api/atlas/<name>/image/<id>  /api/atlas/<name>/figure/<file>
    POST /api/atlas/<name>/search (JSON text)  /api/atlas/<name>/search/image (multipart)  /api/atlas/<name>/label
    /api/study/<name>  /api/study/<name>/figure/<file>
    /api/atlas/<name>/featviz/<layer>/<file>            feature visualisations (the files the layer's table lists)

Errors are JSON ``{"error": message}``: 404 for what is not there, 409 for results not computed (the message
names the command), 400 for bad input, 403 for a sample file that is not the dataset image the atlas recorded
(``unitlens.explorer.paths``) and for a request whose ``Host`` header names another server, 413 for an upload over
the limit. The only files written are the thumbnail and map cache of each atlas (``unitlens.explorer.thumbnails``,
``unitlens.explorer.maps``).

Only requests whose ``Host`` is this server (``local_hosts``: the bound address, ``localhost``, ``127.0.0.1`` or
``[::1]``, with the port) are answered, so a web page whose name an attacker points at 127.0.0.1 (DNS rebinding)
cannot read the explorer from the user's browser.
"""
from __future__ import annotations

import errno
import functools
import html
import io
import socket
import threading
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from unitlens.errors import (
    BadInput,
    Forbidden,
    LensError,
    MissingFile,
    NotComputed,
    NotFound,
    Unavailable,
    UnitlensError,
)
from unitlens.explorer.catalog import Catalog
from unitlens.explorer.defaults import CACHE_SECONDS, HOST, MAX_UPLOAD_BYTES, MAX_UPLOAD_FILES, PORT, SEARCH_TOP
from unitlens.explorer.hosts import HostCheck
from unitlens.explorer.live import LiveLens
from unitlens.explorer.options import ServeOptions
from unitlens.explorer.paths import inside, media_type
from unitlens.options import takes_options

ASSETS = Path(str(files("unitlens.explorer") / "assets"))
MAX_PIXELS = 40_000_000  # an uploaded probe image larger than this is refused (decompression bombs)


@functools.cache
def page_template() -> str:
    """The front end's page as shipped (read once)."""
    return (ASSETS / "index.html").read_text()


def index_html(head: str) -> str:
    """The front end's page with ``head`` (a base URL, a preload link, the static report's data script) filled in."""
    return page_template().replace("<!--HEAD-->", head)


def status_of(err: Exception) -> int:
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, Forbidden):
        return 403
    if isinstance(err, NotComputed):
        return 409
    if isinstance(err, (BadInput, NotImplementedError)):
        return 400
    if isinstance(err, LensError):
        return 400
    if isinstance(err, Unavailable):
        return 503
    return 500


def error(err: Exception | str, status: int | None = None) -> JSONResponse:
    status = status if status is not None else status_of(err) if isinstance(err, Exception) else 400
    return JSONResponse({"error": str(err), "kind": type(err).__name__ if isinstance(err, Exception) else "BadInput"},
                        status_code=status)


def decode_upload(name: str, data: bytes) -> Image.Image:
    """An uploaded file as an RGB image, or ``BadInput`` saying why it is not one."""
    if not data:
        raise BadInput(f"upload '{name}' is empty")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise BadInput(f"upload '{name}' has {image.width}×{image.height} pixels; probe images may have at most "
                           f"{MAX_PIXELS:,} pixels")
        image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        raise BadInput(f"upload '{name}' is not an image the explorer can read ({err}); upload a PNG, JPEG, GIF, "
                       "WebP or BMP file") from err
    return image.convert("RGB")


def index_of(text: str, what: str) -> int:
    """A path segment as a unit index or sample id: ASCII digits only (``"²".isdigit()`` is true, but ``int``
    refuses it), else ``NotFound``."""
    if not (text.isascii() and text.isdigit()):
        raise NotFound(f"'{text}' is not {what} (0, 1, 2, ...)")
    return int(text)


def count_of(value: object, field: str, default: int) -> int:
    """A request's count field (a JSON number or a form's digits; absent: ``default``), else ``BadInput``."""
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and int(value) > 0:
        return int(value)
    raise BadInput(f"'{field}' must be a whole number of units (1, 2, ...), not {value!r}")


def layers_of(value: object) -> list[str] | None:
    """A request's ``layers``: a list of layer names or globs, or one comma-separated string (absent or empty:
    every layer), else ``BadInput``."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadInput(f"'layers' must be a list of layer names or globs, e.g. [\"blocks.6.*\"], not {value!r}")
    return value or None


def preload_link(parts: tuple[str, ...]) -> str:
    """A ``<link rel=preload>`` for ``/api/<parts>``, spelled as the front end's ``fetch`` spells it
    (``encodeURIComponent`` of each part), so the browser hands the preloaded response to that fetch."""
    href = "/api/" + "/".join(quote(part, safe="!*'()") for part in parts)
    return f'<link rel="preload" href="{html.escape(href)}" as="fetch" crossorigin="anonymous">'


def page_samples(unit: dict) -> list[int]:
    """The samples of its own atlas that a unit page draws when it opens: top and bottom exemplars, the first MIS
    task, concept examples, the top exemplars of similar units in this atlas and the most relevant samples."""
    ids = [*unit["top"]["ids"], *unit["bottom"]["ids"]]
    tasks = (unit.get("mis") or {}).get("tasks") or []
    if tasks:
        task = tasks[0]
        ids += [*task["pos_expl"], *task["neg_expl"], task["pos_query"], task["neg_query"]]
    lens = unit.get("lens") or {}
    ids += [example["id"] for example in lens.get("examples") or []]
    similar = lens.get("similar") or {}
    for group in (similar.get("layer") or [], similar.get("atlas") or []):
        ids += [card["top_id"] for card in group if card.get("top_id") is not None]
    for row in (unit.get("relevance") or {}).get("classes") or []:
        ids += row.get("top_ids", [])[:5]
    return ids


def create_app(catalog: Catalog, live: LiveLens | None = None, host: str = HOST) -> FastAPI:
    """The explorer app over ``catalog``; ``live`` runs the probes (None: a LiveLens on the CPU); ``host``: the
    address it listens on, a name it answers to besides its socket's address and the local names (``HostCheck``)."""
    live = live or LiveLens()
    app = FastAPI(title="unitlens explorer", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(HostCheck, names=(host,))
    base = '<base href="/">'
    page = index_html(base)

    @app.exception_handler(UnitlensError)
    async def unitlens_error(request: Request, err: UnitlensError) -> JSONResponse:
        return error(err)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> JSONResponse:
        return error(f"the request could not be read: {err.errors()[0].get('msg', err) if err.errors() else err}",
                     400)

    @app.exception_handler(NotImplementedError)
    async def not_implemented(request: Request, err: NotImplementedError) -> JSONResponse:
        return error(err, 400)

    app.mount("/static", StaticFiles(directory=ASSETS), name="static")

    def front(check=None, data: tuple[str, ...] = ()) -> HTMLResponse:
        """The page; ``data``: the API path its view fetches first, preloaded so that the request starts with the
        page's script instead of after it."""
        try:
            if check is not None:
                check()
        except NotFound:
            return HTMLResponse(page, status_code=404)
        return HTMLResponse(index_html(f"{base}\n{preload_link(data)}") if data else page)

    def unit_number(text: str) -> int:
        return index_of(text, "a unit index")

    # ------------------------------------------------------------------ pages
    @app.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        return front()

    @app.get("/atlas/{name}", response_class=HTMLResponse)
    def atlas_page(name: str) -> HTMLResponse:
        return front(lambda: catalog.atlas(name), ("atlas", name))

    @app.get("/atlas/{name}/search", response_class=HTMLResponse)
    def search_page(name: str) -> HTMLResponse:
        return front(lambda: catalog.atlas(name))

    @app.get("/atlas/{name}/layer/{layer}", response_class=HTMLResponse)
    def layer_page(name: str, layer: str) -> HTMLResponse:
        return front(lambda: catalog.atlas(name).info(layer), ("atlas", name, "layer", layer))

    @app.get("/atlas/{name}/layer/{layer}/unit/{unit}", response_class=HTMLResponse)
    def unit_page(name: str, layer: str, unit: str) -> HTMLResponse:
        return front(lambda: catalog.atlas(name).check_unit(layer, unit_number(unit)),
                     ("atlas", name, "layer", layer, "unit", unit))

    @app.get("/study/{name}", response_class=HTMLResponse)
    def study_page(name: str) -> HTMLResponse:
        return front(lambda: catalog.study(name))

    # ------------------------------------------------------------------ data
    @app.get("/api/catalog")
    def api_catalog() -> dict:
        return {**catalog.payload(), "mode": "server", "live": True}

    @app.get("/api/atlas/{name}")
    def api_overview(name: str) -> dict:
        return catalog.atlas(name).overview()

    @app.get("/api/atlas/{name}/layer/{layer}")
    def api_layer(name: str, layer: str) -> dict:
        return catalog.atlas(name).layer(layer)

    @app.get("/api/atlas/{name}/layer/{layer}/map")
    def api_map(name: str, layer: str) -> dict:
        return catalog.atlas(name).layer_map(layer)

    @app.get("/api/atlas/{name}/layer/{layer}/unit/{unit}")
    def api_unit(name: str, layer: str, unit: str) -> dict:
        view = catalog.atlas(name)
        payload = view.unit(layer, unit_number(unit))
        payload["thumbs"] = view.thumbnails.inline(page_samples(payload))
        return payload

    @app.get("/api/study/{name}")
    def api_study(name: str) -> dict:
        return catalog.study(name).payload()

    # ------------------------------------------------------------------ files
    def cached(request: Request, tag: str, make) -> Response:
        headers = {"Cache-Control": f"public, max-age={CACHE_SECONDS}", "ETag": f'"{tag}"'}
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        return make(headers)

    def sample_id(text: str) -> int:
        return index_of(text, "a sample id")

    @app.get("/api/atlas/{name}/thumb/{sample}")
    async def api_thumb(name: str, sample: str, request: Request) -> Response:
        view = catalog.atlas(name)
        sid = sample_id(sample)
        if not view.thumbnails.loaded:
            await run_in_threadpool(lambda: view.thumbnails.dataset)  # reads the sample table once
        try:
            view.thumbnails.check(sid)
        except BadInput as err:
            raise NotFound(str(err)) from err
        tag = f"{view.atlas.manifest.config.dataset_fingerprint}-{sid}-{view.thumbnails.size}"
        if request.headers.get("if-none-match") == f'"{tag}"':
            return cached(request, tag, None)
        # a cached thumbnail is a few kB read at once; making one decodes an image, so it leaves the event loop
        try:
            data = view.thumbnails.at_hand(sid) or await run_in_threadpool(view.thumbnails.data, sid)
        except MissingFile as err:
            raise NotFound(str(err)) from err
        return cached(request, tag, lambda h: Response(data, media_type="image/jpeg", headers=h))

    @app.get("/api/atlas/{name}/image/{sample}")
    def api_image(name: str, sample: str, request: Request) -> Response:
        view = catalog.atlas(name)
        sid = sample_id(sample)
        try:
            data, kind = view.thumbnails.original(sid)
        except BadInput as err:
            raise NotFound(str(err)) from err
        tag = f"{view.atlas.manifest.config.dataset_fingerprint}-{sid}-full"
        return cached(request, tag, lambda h: Response(data, media_type=kind, headers=h))

    def figure(root: Path, listed: dict[str, Path], file: str, request: Request) -> Response:
        path = listed.get(file)
        if path is None or not inside(root, path):
            raise NotFound(f"no figure '{file}' here")
        stat = path.stat()
        return cached(request, f"{stat.st_mtime_ns}-{stat.st_size}",
                      lambda h: FileResponse(path, media_type=media_type(path), headers=h))

    @app.get("/api/atlas/{name}/figure/{file:path}")
    def api_atlas_figure(name: str, file: str, request: Request) -> Response:
        view = catalog.atlas(name)
        return figure(view.path, view.figures(), file, request)

    @app.get("/api/atlas/{name}/featviz/{layer}/{file:path}")
    def api_atlas_featviz(name: str, layer: str, file: str, request: Request) -> Response:
        view = catalog.atlas(name)
        return figure(view.atlas.derived_path("featviz"), view.featviz_files(layer), file, request)

    @app.get("/api/study/{name}/figure/{file:path}")
    def api_study_figure(name: str, file: str, request: Request) -> Response:
        study = catalog.study(name)
        return figure(study.path, study.figures, file, request)

    # ------------------------------------------------------------------ live lens
    @app.post("/api/atlas/{name}/search")
    def api_search(name: str, body: dict) -> dict:
        text = body.get("text")
        if not isinstance(text, str):
            raise BadInput('a text search needs {"text": "..."}')
        return live.search(catalog.atlas(name), text=text, top=count_of(body.get("top"), "top", SEARCH_TOP),
                           layers=layers_of(body.get("layers")))

    @app.post("/api/atlas/{name}/search/image")
    async def api_search_image(name: str, request: Request) -> Response:
        view = catalog.atlas(name)
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            return error("an image upload must say its size (Content-Length)", 411)
        if int(length) > MAX_UPLOAD_BYTES:
            return error(f"the upload is {int(length) / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES / 2**20:.0f} "
                         "MiB per search (send fewer or smaller images)", 413)
        try:
            form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=8)
        except Exception as err:  # malformed multipart, too many files: Starlette's parser says which
            return error(f"the upload could not be read as a form ({err}); send multipart/form-data with up to "
                         f"{MAX_UPLOAD_FILES} files named 'image'", 400)
        uploads = [f for f in form.getlist("image") if not isinstance(f, str)]
        if not uploads:
            return error("no image in the upload; send the files as form field 'image'", 400)
        try:
            images = [decode_upload(f.filename or "image", await f.read()) for f in uploads]
        except BadInput as err:
            return error(err, 400)
        try:
            top = count_of(form.get("top"), "top", SEARCH_TOP)
        except BadInput as err:
            return error(err, 400)
        result = await run_in_threadpool(live.search, view, None, images, top)
        return JSONResponse(result)

    @app.post("/api/atlas/{name}/label")
    def api_label(name: str, body: dict) -> dict:
        concepts = body.get("concepts")
        if isinstance(concepts, str):
            concepts = concepts.splitlines()
        if not isinstance(concepts, list) or not all(isinstance(c, str) for c in concepts):
            raise BadInput('labelling needs {"concepts": ["concept", ...]} (or one concept per line)')
        return live.label(catalog.atlas(name), concepts, layers=layers_of(body.get("layers")))

    return app


# ---------------------------------------------------------------------------------------------- running it
def listen(host: str = HOST, port: int = PORT) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port), or ``BadInput`` saying why it cannot be had."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as err:
        raise BadInput(f"cannot listen on host '{host}' ({err}); give --host an address such as 127.0.0.1") from err
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family in (socket.AF_INET, socket.AF_INET6):
        # connections inherit it: a response written as headers + body must not wait for the client's delayed ACK
        # (Nagle), which costs ~40 ms per request on a kept-alive connection
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise BadInput(f"port {port} on {host} is already in use (another unitlens serve?); pick another with "
                           "--port N, or --port 0 for any free port") from err
        raise BadInput(f"cannot listen on {host}:{port} ({err.strerror}); check --host and --port") from err
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` runs uvicorn in a thread on a free local port (tests, benchmarks)."""

    def __init__(self, app: FastAPI, host: str = HOST, port: int = 0):
        import uvicorn

        self.sock = listen(host, port)
        self.url = url_of(self.sock)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise Unavailable("the explorer server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@takes_options(ServeOptions)
def serve(paths: list, options: ServeOptions | None = None, *,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the explorer over atlases and study folders until interrupted.

    The port is taken before the catalog is read, so a taken port fails at once. The app is read-only but for
    its thumbnail cache.

    Parameters
    ----------
    paths
        Atlas folders and/or study folders (each shown under a unique name).
    options
        Where to listen and where the lens backend runs (``ServeOptions``; keyword arguments override its fields).
    on_ready
        Called with the app's URL once it listens.

    Returns
    -------
    None
        It returns when the server stops (Ctrl-C).
    """
    import uvicorn

    assert options is not None  # takes_options fills it
    host = options.host
    sock = listen(host, options.port)
    try:
        catalog = Catalog(paths)
        server = uvicorn.Server(uvicorn.Config(create_app(catalog, LiveLens(options.device), host=host),
                                               log_level="warning", lifespan="off"))
        threading.Thread(target=catalog.warm, daemon=True).start()
        if on_ready is not None:
            on_ready(url_of(sock))
        server.run(sockets=[sock])
    finally:
        sock.close()
