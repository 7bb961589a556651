package bench

import (
	"fmt"
	"image/color"
	"math"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WritePlot draws throughput over time and the latency distribution (as a
// percentile curve) side by side into a PNG file.
func WritePlot(path string, r Report, h *Histogram) error {
	tp := plot.New()
	tp.Title.Text = fmt.Sprintf("throughput (%d replicas, %s, log %s)", r.Conditions.Replicas, r.Conditions.Mode, r.Conditions.Log)
	tp.X.Label.Text = "seconds"
	tp.Y.Label.Text = "ops/s"
	pts := make(plotter.XYs, len(r.Series))
	for i, v := range r.Series {
		pts[i] = plotter.XY{X: float64(i + 1), Y: v}
	}
	line, err := plotter.NewLine(pts)
	if err != nil {
		return err
	}
	line.Color = color.RGBA{B: 200, A: 255}
	tp.Add(line, plotter.NewGrid())
	if w := r.Conditions.Warmup; w != "" {
		if d, err := time.ParseDuration(w); err == nil && d > 0 {
			warm, _ := plotter.NewLine(plotter.XYs{{X: d.Seconds(), Y: 0}, {X: d.Seconds(), Y: maxOf(r.Series)}})
			warm.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
			tp.Add(warm)
			tp.Legend.Add("end of warm-up", warm)
		}
	}

	lp := plot.New()
	lp.Title.Text = "latency by percentile"
	lp.X.Label.Text = "percentile (log scale: 90, 99, 99.9 ...)"
	lp.Y.Label.Text = "latency (µs)"
	var lat plotter.XYs
	for _, q := range []float64{0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999} {
		lat = append(lat, plotter.XY{X: -math.Log10(1 - q), Y: float64(h.Quantile(q)) / 1e3})
	}
	ll, err := plotter.NewLine(lat)
	if err != nil {
		return err
	}
	ll.Color = color.RGBA{R: 200, A: 255}
	lp.Add(ll, plotter.NewGrid())
	lp.X.Tick.Marker = plot.ConstantTicks([]plot.Tick{
		{Value: -math.Log10(0.5), Label: "50"}, {Value: 1, Label: "90"}, {Value: 2, Label: "99"},
		{Value: 3, Label: "99.9"}, {Value: 4, Label: "99.99"},
	})

	img := vgimg.New(vg.Points(1100), vg.Points(420))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Points(20), PadY: vg.Points(10), PadTop: vg.Points(10), PadBottom: vg.Points(10), PadLeft: vg.Points(10), PadRight: vg.Points(10)}
	canvases := plot.Align([][]*plot.Plot{{tp, lp}}, tiles, dc)
	tp.Draw(canvases[0][0])
	lp.Draw(canvases[0][1])
	return saveImage(path, img)
}

func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
