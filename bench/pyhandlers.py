"""The seed's computation as a handler for `python -m taskhub worker` (bench/python.sh)."""


def square(n):
    return "%d * %d = %d" % (n, n, n * n)
