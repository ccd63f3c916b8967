// Inline SVG charts.
