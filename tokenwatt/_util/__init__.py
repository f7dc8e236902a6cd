"""Small utilities below every package: identifiers, devices, data files."""
