"""Tests of the golden set, preprocessing, metrics and evaluation."""
