package selector

import (
	"fmt"
	"testing"
)

// Chi-square critical values at p = 0.001, by degrees of freedom.
var chi2Crit001 = map[int]float64{1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515}

// chiSquare returns Pearson's statistic of counts against expected
// probabilities over total trials.
func chiSquare(counts []int, probs []float64, total int) float64 {
	var x float64
	for i, c := range counts {
		e := probs[i] * float64(total)
		d := float64(c) - e
		x += d * d / e
	}
	return x
}

// withinBound runs sample, which returns a chi-square statistic with df
// degrees of freedom, and passes if it stays below the p = 0.001 critical
// value. A correct implementation exceeds it once in a thousand runs, so a
// second independent sample is drawn before failing: the false alarm rate is
// then one in a million, while a biased order exceeds the bound by far every
// time.
func withinBound(t *testing.T, df int, sample func() float64) {
	t.Helper()
	crit := chi2Crit001[df]
	var x [2]float64
	for a := range x {
		if x[a] = sample(); x[a] < crit {
			return
		}
	}
	t.Fatalf("chi-square %.2f and %.2f both exceed %.3f (df=%d, p=0.001)", x[0], x[1], crit, df)
}

// TestOrderFirstPickShares checks SPEC 4.1: over many requests the share of
// first picks is proportional to priority, standby never first; and the same
// holds among candidates that are all cooling.
func TestOrderFirstPickShares(t *testing.T) {
	const trials = 20000
	prios := []int{1, 2, 3, 4, 10, 0}
	var sum float64
	for _, p := range prios {
		sum += float64(p)
	}
	probs := make([]float64, 5)
	for i := range probs {
		probs[i] = float64(prios[i]) / sum
	}
	for _, cooling := range []bool{false, true} {
		t.Run(fmt.Sprint("cooling=", cooling), func(t *testing.T) {
			tb := upstreams(prios...)
			if cooling {
				for i := range tb.Len() {
					coolDown(tb, i)
				}
			}
			cands := make([]int, 0, len(prios))
			withinBound(t, len(probs)-1, func() float64 {
				counts := make([]int, len(probs))
				for range trials {
					cands = tb.Match(cands[:0], "m")
					tb.Order(cands, t0)
					if cands[0] >= len(probs) {
						t.Fatalf("standby %d picked first: %v", cands[0], cands)
					}
					counts[cands[0]]++
				}
				return chiSquare(counts, probs, trials)
			})
		})
	}
}

// TestOrderPermutationShares checks that the whole order, not only the first
// pick, is weighted sampling without replacement: order (a, b, c) has
// probability w_a/W · w_b/(W−w_a).
func TestOrderPermutationShares(t *testing.T) {
	const trials = 20000
	w := []float64{1, 2, 5}
	tb := upstreams(1, 2, 5)
	perms := [][3]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}
	total := w[0] + w[1] + w[2]
	probs := make([]float64, len(perms))
	for i, p := range perms {
		probs[i] = w[p[0]] / total * w[p[1]] / (total - w[p[0]])
	}
	cands := make([]int, 0, 3)
	withinBound(t, len(perms)-1, func() float64 {
		counts := make([]int, len(perms))
		for range trials {
			cands = tb.Match(cands[:0], "m")
			tb.Order(cands, t0)
			got := [3]int(cands)
			found := false
			for i, p := range perms {
				if p == got {
					counts[i]++
					found = true
				}
			}
			if !found {
				t.Fatalf("Order returned %v, not a permutation of 0..2", cands)
			}
		}
		return chiSquare(counts, probs, trials)
	})
}
