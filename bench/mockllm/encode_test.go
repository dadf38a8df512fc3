package main

import "testing"

func TestRuneStart(t *testing.T) {
	b := []byte("a世b")
	f := func(i, want int) {
		t.Helper()
		if got := runeStart(b, i); got != want {
			t.Fatalf("runeStart(%d) = %d, want %d", i, got, want)
		}
	}
	f(0, 0)
	f(1, 1)
	f(2, 1)
	f(3, 1)
	f(4, 4)
	f(5, 5)
}
