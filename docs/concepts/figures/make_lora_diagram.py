"""Draw docs/concepts/figures/lora.svg: the LoRA forward pass h = W x + (alpha / r) B A x.

    python docs/concepts/figures/make_lora_diagram.py      # rewrites lora.svg next to this file

Box sizes follow the shapes: W is d x d, A is r x d and B is d x r, drawn for d = 384 (MiniLM's hidden
size) and r = 8, so the picture shows how little LoRA adds. Plain SVG, no dependencies.
"""

from __future__ import annotations

from pathlib import Path

D, R = 384, 8
SCALE = 0.5  # pixels per unit of d
FROZEN, TRAINED, INK = "#c6d4ef", "#f6b26b", "#202124"


def box(x: float, y: float, w: float, h: float, fill: str, label: str, note: str = "") -> str:
    text = (f'<text x="{x + w / 2:.1f}" y="{y + h / 2 + 5:.1f}" text-anchor="middle" font-size="15">{label}</text>')
    under = (f'<text x="{x + w / 2:.1f}" y="{y + h + 16:.1f}" text-anchor="middle" font-size="11" '
             f'fill="#5f6368">{note}</text>') if note else ""
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{fill}" stroke="{INK}"/>{text}{under}'


def arrow(x1: float, y1: float, x2: float, y2: float) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{INK}" marker-end="url(#head)"/>'


def label(x: float, y: float, text: str, size: int = 13, anchor: str = "middle") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}">{text}</text>'


def diagram() -> str:
    side, thin = D * SCALE, max(R * SCALE * 2, 8)  # r is drawn at twice its scale so it stays visible
    x0, top = 90, 80
    mid = top + side / 2                       # the row of x, W x and h
    a_y = top + side + 110                     # the row of the adapter path
    b_x, b_h = x0 + side + 70, side * 0.6      # B: a tall thin bar right of A
    parts = [
        '<defs><marker id="head" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
        f'<path d="M0,0 L8,4 L0,8 z" fill="{INK}"/></marker></defs>',
        label(20, 26, "LoRA: h = W x + (alpha / r) B A x", 16, "start"),
        label(20, 48, f"d = {D}, r = {R}: the adapter adds {2 * D * R:,} trainable weights to {D * D:,} frozen "
                      f"ones ({2 * R / D:.1%})", 13, "start"),
        label(40, mid + 6, "x", 18), arrow(52, mid, x0 - 4, mid),
        box(x0, top, side, side, FROZEN, "W (d x d)", f"frozen: {D * D:,} weights"),
        f'<polyline points="60,{mid} 60,{a_y}" fill="none" stroke="{INK}"/>', arrow(60, a_y, x0 - 4, a_y),
        box(x0, a_y - thin / 2, side, thin, TRAINED, ""),
        label(x0, a_y + thin / 2 + 18, f"A (r x d), random init: {R * D:,} weights", 12, "start"),
        arrow(x0 + side, a_y, b_x - thin / 2 - 4, a_y),
        box(b_x - thin / 2, a_y - b_h / 2, thin, b_h, TRAINED, ""),
        label(b_x + 14, a_y + 4, f"B (d x r), zeros at init: {D * R:,} weights", 12, "start"),
        label(b_x + 14, a_y + 22, "so training starts from the original model", 11, "start"),
        f'<circle cx="{b_x}" cy="{mid}" r="16" fill="white" stroke="{INK}"/>', label(b_x, mid + 7, "+", 20),
        arrow(x0 + side, mid, b_x - 20, mid),
        arrow(b_x, a_y - b_h / 2, b_x, mid + 20),
        label(b_x + 10, (mid + a_y - b_h / 2) / 2 + 4, "x alpha / r", 12, "start"),
        arrow(b_x + 16, mid, b_x + 70, mid), label(b_x + 84, mid + 6, "h", 18),
    ]
    legend_y = a_y + b_h / 2 + 40
    parts += [box(20, legend_y, 14, 14, FROZEN, ""), label(40, legend_y + 12, "frozen", 12, "start"),
              box(100, legend_y, 14, 14, TRAINED, ""), label(120, legend_y + 12, "trained", 12, "start")]
    width, height = 640, int(legend_y + 30)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
            f'role="img" aria-label="LoRA forward pass"><rect width="100%" height="100%" fill="white"/>'
            + "".join(parts) + "</svg>\n")


if __name__ == "__main__":
    out = Path(__file__).with_name("lora.svg")
    out.write_text(diagram(), encoding="utf-8")
    print(f"wrote {out}")
