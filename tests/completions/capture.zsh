# Prints the completions zsh offers after typing $2 and Tab, with the completion functions
# in the directory $1: zsh runs on a pseudo-terminal (zpty), its completion system loaded,
# and compadd reports what it is given.
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1=''; fpath=($1 \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z 'compadd() { builtin compadd -O __hits "$@"; print -l -- "<<""<" $__hits ">>"">"; builtin compadd "$@" }'
zpty -w z "$2"$'\t'
zpty -w z $'\C-u'"print ZPTY''DONE"
integer inside=0
while zpty -r z line; do
  line=${line//$'\r'/}
  [[ $line == *ZPTYDONE* ]] && break
  [[ $line == *'<<<'* ]] && inside=1 && continue
  [[ $line == *'>>>'* ]] && inside=0 && continue
  (( inside )) && [[ -n $line ]] && print -r -- "$line"
done
zpty -d z
