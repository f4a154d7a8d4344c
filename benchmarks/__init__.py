"""promptscale's benchmarks (``make bench``): outside the library, which never imports them."""
