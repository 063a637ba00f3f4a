"""Modules the tests share (fixtures, workers, drivers); no tests of their own."""
