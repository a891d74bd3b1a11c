"""The Swagger UI page of /api/v1/docs, served from the local swagger-ui-dist npm package.

The page carries no inline script or style, so it works under a strict Content-Security-Policy
(``script-src 'self'``): the initializer that points Swagger UI at the document is a separate
file, ``{assets_prefix}/init.js``, whose body ``swagger_ui_init_js`` returns.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
INIT_JS = "init.js"


def swagger_assets_dir() -> Path:
    """node_modules/swagger-ui-dist of the project; fails loudly when `npm ci` has not run."""
    path = PROJECT_ROOT / "node_modules" / "swagger-ui-dist"
    if not (path / "swagger-ui-bundle.js").is_file():
        raise FileNotFoundError(f"{path} has no swagger-ui-bundle.js: run `npm ci` in {PROJECT_ROOT}")
    return path


def swagger_asset_files() -> dict[str, Path]:
    """The files of the assets directory by name, read once at start-up.

    The assets handler serves only a name from this table, so no part of a request path ever
    reaches the filesystem: ``..``, a NUL byte or a nested path is simply not a key (404)."""
    return {path.name: path for path in swagger_assets_dir().iterdir() if path.is_file()}


def swagger_ui_html(spec_url: str, assets_prefix: str) -> str:
    prefix = escape(assets_prefix.rstrip("/"), quote=True)
    spec = escape(spec_url, quote=True)
    return f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>smm API reference</title>
    <link rel="stylesheet" type="text/css" href="{prefix}/swagger-ui.css">
    <link rel="stylesheet" type="text/css" href="{prefix}/index.css">
    <link rel="icon" type="image/png" href="{prefix}/favicon-32x32.png" sizes="32x32">
  </head>
  <body>
    <noscript>This page needs JavaScript; the document is at <a href="{spec}">{spec}</a>.</noscript>
    <div id="swagger-ui"></div>
    <script src="{prefix}/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="{prefix}/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script src="{prefix}/{INIT_JS}" charset="UTF-8"></script>
  </body>
</html>
"""


def swagger_ui_init_js(spec_url: str) -> str:
    # json.dumps yields a valid JS string literal, so a URL cannot break out of it.
    return f"""window.addEventListener("load", function () {{
  window.ui = SwaggerUIBundle({{
    url: {json.dumps(spec_url)},
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout"
  }});
}});
"""
