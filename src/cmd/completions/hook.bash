
# cfgsync: env and output names from the config (`cfgsync complete-names`),
# for --env, --from and the env arguments of diff, explain, set, set-secret.
_cfgsync_names() {
    local i config=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            --config) config=(--config "${COMP_WORDS[i+1]}") ;;
            --config=*) config=(--config "${COMP_WORDS[i]#--config=}") ;;
        esac
    done
    cfgsync "${config[@]}" complete-names "$1" 2>/dev/null
}

_cfgsync_dynamic() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" what="" i sub="" n=0
    case "$prev" in
        --env) what=envs ;;
        --from) what=outputs ;;
        *)
            for ((i = 1; i < COMP_CWORD; i++)); do
                case "${COMP_WORDS[i]}" in
                    --config|--output|--kubeconfig|--log-format|--owner|--reason) ((i++)) ;;
                    -*) ;;
                    *) if [[ -z "$sub" ]]; then sub="${COMP_WORDS[i]}"; else ((n++)); fi ;;
                esac
            done
            case "$sub,$n" in
                diff,0|diff,1|explain,0|set,0|set-secret,0) [[ "$cur" != -* ]] && what=envs ;;
            esac
            ;;
    esac
    if [[ -n "$what" ]]; then
        COMPREPLY=($(compgen -W "$(_cfgsync_names "$what")" -- "$cur"))
        return 0
    fi
    _cfgsync "$@"
}
