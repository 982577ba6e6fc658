# Sourced by compare.sh and compare-webrtc.sh. plot_python prints a python3 that has
# matplotlib (the system's, or a private venv under target/ made where missing and left for
# the next run), or nothing, after saying so, where none can be had.
plot_python() {
    if python3 -c 'import matplotlib' 2>/dev/null; then
        echo python3
    elif [ -x target/bench-venv/bin/python3 ] && target/bench-venv/bin/python3 -c 'import matplotlib' 2>/dev/null ||
        { python3 -m venv target/bench-venv >&2 && target/bench-venv/bin/pip install -q matplotlib >&2; }; then
        echo target/bench-venv/bin/python3
    else
        echo "$(basename "$0"): matplotlib unavailable: table only, no plot" >&2
    fi
}
