"""What train.py and test.py share on the console: flag parsing with exit codes,
grouped help, the framework's start-up noise filter and "did you mean".

Nothing here reads flags by itself: the scripts pass their flags and argv.
"""

import difflib
import os
import re
import sys
import threading

#: Lines of TensorFlow / oneDNN / XLA / absl start-up noise (C++ logging to fd 2).
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|"
    r"[IW]\d{4} [\d:. ]+\s+\d+ \S+\.(cc|h):\d+\]|"
    r"To enable the following instructions: )")


def quiet_framework_logs():
    """Filters the framework's start-up noise out of stderr (file descriptor 2, where
    the C++ libraries write) for the rest of the process, and JAX's int64-to-int32
    warnings: every other line (errors, tracebacks) passes. Call before TensorFlow or
    JAX is imported."""
    import warnings
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # JAX without x64: Keras's int64 counters are int32 there, every run (harmless).
    warnings.filterwarnings("ignore", message=r"Explicitly requested dtype int64",
                            category=UserWarning)
    try:
        read_fd, write_fd = os.pipe()
        real = os.dup(2)
    except OSError:
        return
    sys.stderr.flush()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def forward():
        with os.fdopen(read_fd, "rb") as pipe, os.fdopen(real, "wb", buffering=0) as out:
            for line in pipe:
                if not NOISE.match(line.decode("utf-8", "replace")):
                    out.write(line)

    thread = threading.Thread(target=forward, daemon=True, name="stderr-filter")
    thread.start()

    import atexit

    def drain():
        sys.stderr.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # closes the pipe's write end
        thread.join(timeout=2)

    atexit.register(drain)


def did_you_mean(value, choices):
    """``" Did you mean 'x'?"`` for the closest of ``choices`` (also ignoring case and
    ``-``/``_``), or ""."""
    def norm(text):
        return re.sub(r"[-_ ]", "", str(text).lower())
    same = [c for c in choices if norm(c) == norm(value)]
    close = same or difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.75)
    return f" Did you mean {close[0]!r}?" if close else ""


def help_text(prog, summary, flag_values, groups, factory_default):
    """Help grouped by what the flags configure. ``groups``: ``[(title, [flag, ...])]``;
    a flag in ``factory_default`` is shown with "default: the factory's value"."""
    lines = [summary.strip(), ""]
    for title, names in groups:
        lines.append(f"{title}:")
        for name in names:
            flag = flag_values[name]
            if name in factory_default:
                default = "the factory's value"
            elif flag.default is None:
                default = "none"
            elif isinstance(flag.default, bool):
                default = str(flag.default).lower()
            else:
                default = str(flag.default)
            kind = "" if flag.flag_type() == "bool" else "=" + flag.flag_type().upper()
            text = flag.help
            if flag.flag_type().startswith("multi"):  # absl appends "; repeat this option..."
                kind, text = "=VALUE (repeatable)", text.split(";\n")[0]
            lines.append(f"  --{name}{kind}")
            lines.append(f"      {text} (default: {default})")
        lines.append("")
    lines.append(f"Exit status: 0 done, 2 bad input, 3 non-finite loss, 4 unwritable results, "
                 f"130 interrupted. See README.md. ({prog})")
    return "\n".join(lines)


def parse_flags(prog, flag_values, argv, help_fn):
    """Parses ``argv`` into ``flag_values``: ``--help`` prints ``help_fn()`` and exits 0;
    a bad flag or value, or a positional argument, prints one line and exits 2."""
    if any(arg in ("-h", "--help", "-help", "--helpfull", "-?") for arg in argv[1:]):
        print(help_fn())
        sys.exit(0)
    try:
        rest = flag_values(argv)
    except Exception as error:  # absl flags.Error: unknown flag, bad value
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"{prog}: error: {text} (--help lists the flags)", file=sys.stderr)
        sys.exit(2)
    if len(rest) > 1:
        print(f"{prog}: error: unexpected argument(s) {rest[1:]}: flags are --NAME=VALUE. "
              f"Received: {' '.join(argv[1:])}", file=sys.stderr)
        sys.exit(2)
    return rest


def image_counter(stream=None, every=0.1):
    """``progress(split, done, total)`` printing ``checking images (split): done/total``:
    one updating line on a terminal, else a line per ``every`` of the split (and its
    end), so that a long folder scan is never silent."""
    last = {}

    def progress(split, done, total):
        out = stream if stream is not None else sys.stdout
        text = f"checking images ({split}): {done}/{total}"
        terminal = getattr(out, "isatty", lambda: False)()
        if terminal:
            print("\r\033[K" + text, end="\n" if done >= total else "", file=out, flush=True)
        elif done >= total or done - last.get(split, 0) >= every * total:
            last[split] = done
            print(text, file=out, flush=True)

    return progress
