"""The gradient overlay's colour scale: gradient norms on a log scale, binned into a sequential palette."""
import math

# ColorBrewer YlOrRd without its two palest shades (an edge must show on white): yellow = vanished,
# dark red = large.
PALETTE = ("#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026", "#800026")
NO_GRAD = "#ffffff"
_DARK = 4            # bins from here on get white text


class LogScale:
    """Maps a gradient norm to a palette bin by log10, spanning the smallest to the largest nonzero norm."""

    def __init__(self, norms):
        logs = [math.log10(n) for n in norms if n > 0]
        self.lo = min(logs, default=0.0)
        self.hi = max(logs, default=0.0)
        if self.hi - self.lo < 1e-9:
            self.lo -= 0.5
            self.hi += 0.5

    def bin(self, norm):
        if norm <= 0:
            return 0
        x = (math.log10(norm) - self.lo) / (self.hi - self.lo)
        return min(len(PALETTE) - 1, max(0, int(x * len(PALETTE))))

    def color(self, norm):
        return PALETTE[self.bin(norm)]

    def font_color(self, norm):
        return "white" if self.bin(norm) >= _DARK else "black"

    def legend(self, note="white: no gradient kept"):
        """An HTML-like Graphviz label: the palette with its log-scale range and the no-gradient swatch."""
        mid = (self.lo + self.hi) / 2
        swatches = "".join(f'<TD BGCOLOR="{c}" WIDTH="22" HEIGHT="16"></TD>' for c in PALETTE)
        n = len(PALETTE)
        ticks = "".join(f'<TD COLSPAN="{span}" ALIGN="{a}">{_power(v)}</TD>'
                        for a, v, span in (("LEFT", self.lo, 2), ("CENTER", mid, n - 4), ("RIGHT", self.hi, 2)))
        return (f'<<TABLE BORDER="1" COLOR="#999999" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3">'
                f'<TR><TD COLSPAN="{n}"><B>‖∂L/∂·‖ (log scale)</B></TD></TR>'
                f'<TR>{swatches}</TR><TR>{ticks}</TR>'
                f'<TR><TD COLSPAN="{n}" ALIGN="LEFT">{note}</TD></TR></TABLE>>')


def _power(log10_value):
    return f"1e{round(log10_value):+d}" if abs(log10_value - round(log10_value)) < 0.05 else f"{10 ** log10_value:.1e}"


def luminance(color):
    """WCAG relative luminance of a #rrggbb colour."""
    def channel(c):
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a, b="#ffffff"):
    """WCAG contrast ratio of two #rrggbb colours (1 to 21; text needs 4.5, large text and lines 3)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def readable(color, on="#ffffff", ratio=4.5):
    """`color`, darkened in steps until text in it reaches `ratio` against `on` (the hue is kept)."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    out = color
    while contrast(out, on) < ratio:
        r, g, b = (int(v * 0.85) for v in (r, g, b))
        out = f"#{r:02x}{g:02x}{b:02x}"
    return out
