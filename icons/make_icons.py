#!/usr/bin/env python3
"""Draws every icon of the app: the bundle icons and the tray icons.

Run `python3 icons/make_icons.py` (needs Pillow: `pip install pillow`) after changing the
drawing; the PNG, ICNS and ICO files it writes are checked in, so building the app needs
no Python.

The glyph is an arch bridge: a deck, an arch above it and three hangers. The tray shows
the bridge's state by the glyph's look, in one colour, so macOS can tint it as a template
image: running is the solid glyph, stopped is the glyph faded, error is the faded glyph
with a solid badge holding an exclamation mark. Linux and Windows trays get coloured
tiles, because their panels can be light or dark.
"""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
SS = 8  # supersampling factor: draw big, shrink with a good filter


def glyph(size, color, alpha=255, badge=False, margin=0.0):
    """The bridge glyph on a transparent square of `size` pixels."""
    big = size * SS
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    inner = big * (1 - 2 * margin)
    off = big * margin

    def p(x, y):
        return (off + x * inner, off + y * inner)

    def s(v):
        return v * inner

    fill = color + (255,)
    deck_y = 0.70
    stroke = s(0.105)
    # deck
    d.rounded_rectangle(
        [p(0.04, deck_y - 0.055), p(0.96, deck_y + 0.055)], radius=stroke / 2, fill=fill
    )
    # arch: an ellipse arc whose ends sit on the deck
    box = [p(0.16, 0.26), p(0.84, 0.26 + 2 * (deck_y - 0.26))]
    d.arc(box, start=180, end=360, fill=fill, width=int(stroke))
    # piers below the deck
    for x in (0.2, 0.8):
        d.rounded_rectangle([p(x - 0.05, deck_y), p(x + 0.05, 0.9)], radius=s(0.02), fill=fill)
    # hangers between arch and deck
    for x in (0.36, 0.5, 0.64):
        d.rectangle([p(x - 0.025, 0.30 if x == 0.5 else 0.36), p(x + 0.025, deck_y)], fill=fill)

    if alpha != 255:
        a = img.getchannel("A").point(lambda v: v * alpha // 255)
        img.putalpha(a)

    if badge:
        # a solid disc bottom-right, with a transparent "!" cut out of it
        cx, cy, r = 0.76, 0.74, 0.26
        hole = Image.new("L", (big, big), 0)
        hd = ImageDraw.Draw(hole)
        hd.ellipse([p(cx - r - 0.06, cy - r - 0.06), p(cx + r + 0.06, cy + r + 0.06)], fill=255)
        a = img.getchannel("A")
        a.paste(0, mask=hole)  # clear a ring around the badge so it reads at 16 px
        img.putalpha(a)
        d = ImageDraw.Draw(img)
        d.ellipse([p(cx - r, cy - r), p(cx + r, cy + r)], fill=fill)
        clear = (0, 0, 0, 0)
        d.rounded_rectangle(
            [p(cx - 0.04, cy - 0.17), p(cx + 0.04, cy + 0.05)], radius=s(0.03), fill=clear
        )
        d.ellipse([p(cx - 0.045, cy + 0.09), p(cx + 0.045, cy + 0.18)], fill=clear)

    return img.resize((size, size), Image.LANCZOS)


def app_icon(size, colors=((99, 102, 241), (14, 165, 233)), dot=None):
    """A macOS-style tile: rounded square, vertical gradient, soft shadow, white glyph."""
    big = size * SS
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    # Apple's grid: the tile is 824/1024 of the canvas, corner radius ~ 185/1024
    inset = big * 100 / 1024
    tile = big - 2 * inset
    radius = big * 185 / 1024

    shadow = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    ImageDraw.Draw(shadow).rounded_rectangle(
        [inset, inset + big * 0.012, big - inset, big - inset + big * 0.012],
        radius=radius,
        fill=(0, 0, 0, 90),
    )
    shadow = shadow.filter(ImageFilter.GaussianBlur(big * 0.012))
    img.alpha_composite(shadow)

    grad = Image.new("RGBA", (big, big))
    top, bottom = colors
    gd = ImageDraw.Draw(grad)
    for y in range(big):
        t = y / (big - 1)
        c = tuple(int(top[i] + (bottom[i] - top[i]) * t) for i in range(3))
        gd.line([(0, y), (big, y)], fill=c + (255,))
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).rounded_rectangle(
        [inset, inset, big - inset, big - inset], radius=radius, fill=255
    )
    img.paste(grad, (0, 0), mask)

    # a faint top highlight, as on Apple's tiles
    hl = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    ImageDraw.Draw(hl).rounded_rectangle(
        [inset, inset, big - inset, inset + tile * 0.5], radius=radius, fill=(255, 255, 255, 28)
    )
    img.alpha_composite(Image.composite(hl, Image.new("RGBA", (big, big), (0, 0, 0, 0)), mask))

    g = glyph(int(tile * 0.62), (255, 255, 255)).resize((int(tile * 0.62),) * 2)
    gx = int(inset + (tile - g.width) / 2)
    gy = int(inset + (tile - g.height) / 2 + tile * 0.02)
    gshadow = Image.new("RGBA", g.size, (0, 0, 0, 0))
    gshadow.putalpha(g.getchannel("A").point(lambda v: v * 60 // 255))
    img.alpha_composite(gshadow.filter(ImageFilter.GaussianBlur(big * 0.006)), (gx, gy + int(big * 0.008)))
    img.alpha_composite(g, (gx, gy))

    if dot is not None:
        r = big * 0.16
        cx, cy = big - inset - r * 0.55, big - inset - r * 0.55
        d = ImageDraw.Draw(img)
        d.ellipse([cx - r * 1.18, cy - r * 1.18, cx + r * 1.18, cy + r * 1.18], fill=(255, 255, 255, 255))
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=dot + (255,))

    return img.resize((size, size), Image.LANCZOS)


def main():
    # bundle icons (tauri.conf.json lists these)
    master = app_icon(1024)
    master.save(HERE / "icon.png")
    for size, name in [(32, "32x32.png"), (128, "128x128.png"), (256, "128x128@2x.png")]:
        app_icon(size).save(HERE / name)
    master.save(HERE / "icon.icns", sizes=[(16, 16), (32, 32), (64, 64), (128, 128), (256, 256), (512, 512), (1024, 1024)])
    # the settings window shows the icon beside the app's name
    app_icon(96).save(HERE.parent / "ui" / "settings" / "icon.png")
    app_icon(256).save(HERE / "icon.ico", sizes=[(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)])

    # tray: macOS template images (black + alpha; 18 pt at 2x)
    tray = HERE / "tray"
    tray.mkdir(exist_ok=True)
    black = (0, 0, 0)
    glyph(36, black, margin=0.04).save(tray / "template-running.png")
    glyph(36, black, alpha=110, margin=0.04).save(tray / "template-stopped.png")
    glyph(36, black, alpha=110, badge=True, margin=0.04).save(tray / "template-error.png")

    # tray: coloured tiles for Linux and Windows panels
    app_icon(64, dot=(52, 199, 89)).save(tray / "color-running.png")
    app_icon(64, colors=((142, 142, 147), (99, 99, 102)), dot=(174, 174, 178)).save(tray / "color-stopped.png")
    app_icon(64, colors=((142, 142, 147), (99, 99, 102)), dot=(255, 69, 58)).save(tray / "color-error.png")


if __name__ == "__main__":
    main()
