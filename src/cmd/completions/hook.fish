
# cfgsync: env and output names from the config (`cfgsync complete-names`).
function __cfgsync_names
    set -l config
    set -l tokens (commandline -opc)
    if set -l i (contains -i -- --config $tokens)
        set config --config $tokens[(math $i + 1)]
    end
    cfgsync $config complete-names $argv[1] 2>/dev/null
end
complete -c cfgsync -l env -f -a "(__cfgsync_names envs)"
complete -c cfgsync -n "__fish_cfgsync_using_subcommand run-with" -l from -f -a "(__cfgsync_names outputs)"
complete -c cfgsync -n "__fish_cfgsync_using_subcommand diff explain set set-secret" -f -a "(__cfgsync_names envs)"
