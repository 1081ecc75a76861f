
# cfgsync: env and output names from the config (`cfgsync complete-names`).
_cfgsync_names() {
    local -a config
    local i=${words[(I)--config]}
    (( i )) && config=(--config ${words[i+1]})
    cfgsync $config complete-names $1 2>/dev/null
}
_cfgsync_envs() { local -a names; names=(${(f)"$(_cfgsync_names envs)"}); compadd -a names }
_cfgsync_outputs() { local -a names; names=(${(f)"$(_cfgsync_names outputs)"}); compadd -a names }
