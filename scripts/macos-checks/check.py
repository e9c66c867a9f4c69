"""The parts of the macOS build that can be checked on any machine: the bundle's Info.plist,
tauri.conf.json against Tauri's own config schema, and the icons the bundle names.

Run by scripts/check-macos (which installs Pillow, jsonschema and the schema first).
Prints one sentence naming the file for each problem and exits 1 if there is any.
"""

import json
import plistlib
import sys
from pathlib import Path

import jsonschema
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "src-tauri"
SCHEMA = Path(__file__).resolve().parent / "node_modules/@tauri-apps/cli/config.schema.json"
TRAY = ROOT / "icons/tray"

problems = []


def rel(path):
    return path.resolve().relative_to(ROOT)


def check_info_plist():
    path = APP / "Info.plist"
    try:
        with path.open("rb") as f:
            plist = plistlib.load(f)
    except (OSError, plistlib.InvalidFileException, ValueError) as e:
        problems.append(f"{rel(path)} is not a property list macOS can read: {e}.")
        return
    if plist.get("LSUIElement") is not True:
        problems.append(f"{rel(path)} does not set LSUIElement to true, so the app would show in the Dock.")
    text = plist.get("NSLocalNetworkUsageDescription")
    if not isinstance(text, str) or not text.strip():
        problems.append(
            f"{rel(path)} has no NSLocalNetworkUsageDescription, so macOS 15 would not let the iPad reach the bridge."
        )


def load_config():
    path = APP / "tauri.conf.json"
    try:
        return path, json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{rel(path)} is not JSON: {e}.")
        return path, None


def check_config_schema(path, config):
    try:
        schema = json.loads(SCHEMA.read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{SCHEMA} (Tauri's config schema) cannot be read: {e}; run scripts/check-macos.")
        return
    validator = jsonschema.Draft7Validator(schema)
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        problems.append(
            f"{rel(path)} does not follow Tauri's config schema ({schema.get('$id')}) at {where}: {error.message}."
        )


def png_size(name):
    """The size a bundle icon's name promises: 32x32.png is 32, 128x128@2x.png is 256."""
    stem = Path(name).stem
    scale = 1
    if "@" in stem:
        stem, factor = stem.split("@", 1)
        scale = int(factor.rstrip("x"))
    width, _, height = stem.partition("x")
    return int(width) * scale, int(height) * scale


def check_bundle_icons(path, config):
    icons = config.get("bundle", {}).get("icon", [])
    if not icons:
        problems.append(f"{rel(path)} names no bundle icons.")
    for name in icons:
        icon = (path.parent / name).resolve()
        if not icon.is_file():
            problems.append(f"{rel(path)} names the icon {name}, and there is no such file.")
            continue
        try:
            with Image.open(icon) as image:
                check_icon_sizes(icon, image)
        except OSError as e:
            problems.append(f"{rel(icon)} is not an image: {e}.")


def check_icon_sizes(icon, image):
    """The sizes an icon's name or kind promises."""
    if icon.suffix == ".png":
        want = png_size(icon.name)
        if image.size != want:
            problems.append(f"{rel(icon)} is {image.size[0]}×{image.size[1]}, not the {want[0]}×{want[1]} its name says.")
    elif icon.suffix == ".icns":
        # macOS picks from these point sizes (at 1x or 2x) for Finder, the Dock and Get Info.
        have = {s[0] for s in image.info.get("sizes", [])}
        missing = [s for s in (16, 32, 128, 256, 512) if s not in have]
        if missing:
            problems.append(f"{rel(icon)} lacks the sizes {', '.join(f'{s}×{s}' for s in missing)}.")
    elif icon.suffix == ".ico":
        have = {s[0] for s in image.ico.sizes()}
        missing = [s for s in (16, 32, 48, 256) if s not in have]
        if missing:
            problems.append(f"{rel(icon)} lacks the sizes {', '.join(f'{s}×{s}' for s in missing)}.")


def check_tray_templates():
    """macOS tints template images for the menu bar: black and transparent only."""
    templates = sorted(TRAY.glob("template-*.png"))
    if not templates:
        problems.append(f"{rel(TRAY)} holds no template-*.png tray icons.")
    for path in templates:
        with Image.open(path) as image:
            mode = image.mode
            pixels = list(image.get_flattened_data())
        if mode != "RGBA":
            problems.append(f"{rel(path)} has no alpha channel ({mode}); a template image needs one.")
            continue
        coloured = [p for p in pixels if p[3] > 0 and p[:3] != (0, 0, 0)]
        if coloured:
            problems.append(
                f"{rel(path)} is not monochrome: {len(coloured)} visible pixels are not black (the first is {coloured[0][:3]})."
            )
        alphas = {p[3] for p in pixels}
        if 0 not in alphas or alphas == {0}:
            problems.append(
                f"{rel(path)} is not a shape on a transparent background; macOS would tint it as a block or not at all."
            )


def main():
    check_info_plist()
    path, config = load_config()
    if config is not None:
        check_config_schema(path, config)
        check_bundle_icons(path, config)
    check_tray_templates()
    for problem in problems:
        print(f"macOS checks: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("macOS checks: Info.plist, tauri.conf.json (Tauri's schema), the bundle icons and the tray templates are good")
    return 0


if __name__ == "__main__":
    sys.exit(main())
