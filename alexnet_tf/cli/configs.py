"""Flags to configs: a command's flags become its library's frozen dataclass config field by
field, so that a new option is one flag definition and one field, nothing in between."""

import dataclasses

from absl import flags


def config_from_flags(config_class, flag_values, **overrides):
    """`config_class(...)` with each field taken from the flag of the same name.

    Args:
      config_class: a dataclass.
      flag_values: absl's `FLAGS` (parsed).
      **overrides: fields given explicitly (values computed by the command, or fields whose
        flag has another name).

    Returns:
      The config. List flags become tuples; fields without a flag or override keep their
      defaults.
    """
    values = {}
    for field in dataclasses.fields(config_class):
        if field.name in overrides:
            values[field.name] = overrides[field.name]
        elif field.name in flag_values:
            value = flag_values[field.name].value
            values[field.name] = tuple(value) if isinstance(value, list) else value
    unknown = set(overrides) - {field.name for field in dataclasses.fields(config_class)}
    if unknown:
        raise TypeError(f"{config_class.__name__} has no fields {sorted(unknown)}.")
    return config_class(**values)


def flagfile_text(flag_list, header):
    """`flag_list` (absl Flag objects) as a flagfile: every value, explicit or default."""
    lines = [f"# {header}"]
    for flag in sorted(flag_list, key=lambda f: f.name):
        if flag.value is not None:
            lines.append(flag.serialize())
    return "\n".join(lines) + "\n"


def require_local_paths(*names, flag_values=flags.FLAGS):
    """Registers a validator per named path flag: a run directory and what is written beside it
    must be on a local or mounted file system (`run_dir.check_local_path`), checked
    when the flags are parsed, before any work."""
    from alexnet_tf import run_dir

    for name in names:
        def is_local(value, name=name):
            try:
                for path in value if isinstance(value, list) else [value]:  # (a list flag: each)
                    run_dir.check_local_path(path, flag=f"--{name}")
            except ValueError as error:
                raise flags.ValidationError(str(error)) from None
            return True

        flags.register_validator(name, is_local, flag_values=flag_values)
