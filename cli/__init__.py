"""The `fmnist` command: the top layer. Each subcommand imports what it needs when it runs, so
`fmnist --help` answers at once and `fmnist predict` never loads TensorFlow."""
