"""What the commands share: console output (`console`) and flags turned into the frozen
configs the libraries take (`configs`). The only library code besides the commands that
reads absl flags."""
